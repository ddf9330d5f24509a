#![allow(dead_code)] // each test binary uses part of it

pub mod https;
