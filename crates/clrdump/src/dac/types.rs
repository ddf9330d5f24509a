//! `#[repr(C)]` mirrors of the DAC's request structs (dacprivate.h / sospriv.idl), natural
//! x86-64 alignment (MSLAYOUT only applies to x86 hosts). Sizes are asserted below.

/// A COM GUID.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub u32, pub u16, pub u16, pub [u8; 8]);

pub const IID_IUNKNOWN: Guid = Guid(0, 0, 0, [0xC0, 0, 0, 0, 0, 0, 0, 0x46]);
pub const IID_ICLRDATATARGET: Guid = Guid(0x3E11CCEE, 0xD08B, 0x43e5, [0xAF, 0x01, 0x32, 0x71, 0x7A, 0x64, 0xDA, 0x03]);
pub const IID_ICLRRUNTIMELOCATOR: Guid =
    Guid(0xb760bf44, 0x9377, 0x4597, [0x8b, 0xe7, 0x58, 0x08, 0x3b, 0xdc, 0x51, 0x46]);
pub const IID_IXCLRDATAPROCESS: Guid =
    Guid(0x5c552ab6, 0xfc09, 0x4cb3, [0x8e, 0x36, 0x22, 0xfa, 0x03, 0xc7, 0x98, 0xb7]);
pub const IID_ISOSDACINTERFACE: Guid =
    Guid(0x436f00f2, 0xb42a, 0x4b9f, [0x87, 0x0c, 0xe7, 0x3d, 0xb6, 0x6a, 0xe9, 0x30]);
pub const IID_ISOSDACINTERFACE8: Guid =
    Guid(0xc12f35a9, 0xe55c, 0x4520, [0xa8, 0x94, 0xb3, 0xdc, 0x51, 0x65, 0xdf, 0xce]);
pub const IID_ISOSDACINTERFACE12: Guid =
    Guid(0x1b93bacc, 0x8ca4, 0x432d, [0x94, 0x3a, 0x3e, 0x6e, 0x7e, 0xc0, 0xb0, 0xa3]);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadStoreData {
    pub thread_count: i32,
    pub unstarted: i32,
    pub background: i32,
    pub pending: i32,
    pub dead: i32,
    pub first_thread: u64,
    pub finalizer_thread: u64,
    pub gc_thread: u64,
    pub host_config: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadData {
    pub cor_thread_id: u32,
    pub os_thread_id: u32,
    pub state: i32,
    pub preemptive_gc_disabled: u32,
    pub alloc_context_ptr: u64,
    pub alloc_context_limit: u64,
    pub context: u64,
    pub domain: u64,
    pub frame: u64,
    pub lock_count: u32,
    pub first_nested_exception: u64,
    pub teb: u64,
    pub fiber_data: u64,
    pub last_thrown_object_handle: u64,
    pub next_thread: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncBlockData {
    pub object: u64,
    pub free: i32,
    pub sync_block_pointer: u64,
    pub com_flags: u32,
    pub monitor_held: u32,
    pub recursion: u32,
    pub holding_thread: u64,
    pub additional_thread_count: u32,
    pub app_domain: u64,
    pub sync_block_count: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodTableData {
    pub is_free: i32,
    pub module: u64,
    pub class: u64,
    pub parent: u64,
    pub num_interfaces: u16,
    pub num_methods: u16,
    pub num_vtable_slots: u16,
    pub num_virtuals: u16,
    pub base_size: u32,
    pub component_size: u32,
    pub token: u32,
    pub attr_class: u32,
    pub is_shared: i32,
    pub is_dynamic: i32,
    pub contains_pointers: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GcHeapData {
    pub server_mode: i32,
    pub structures_valid: i32,
    pub heap_count: u32,
    pub max_generation: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerationData {
    pub start_segment: u64,
    pub allocation_start: u64,
    pub alloc_context_ptr: u64,
    pub alloc_context_limit: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GcHeapDetails {
    pub heap_addr: u64,
    pub alloc_allocated: u64,
    pub mark_array: u64,
    pub current_c_gc_state: u64,
    pub next_sweep_obj: u64,
    pub saved_sweep_ephemeral_seg: u64,
    pub saved_sweep_ephemeral_start: u64,
    pub background_saved_lowest_address: u64,
    pub background_saved_highest_address: u64,
    pub generation_table: [GenerationData; 4],
    pub ephemeral_heap_segment: u64,
    pub finalization_fill_pointers: [u64; 7],
    pub lowest_address: u64,
    pub highest_address: u64,
    pub card_table: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapSegmentData {
    pub segment_addr: u64,
    pub allocated: u64,
    pub committed: u64,
    pub reserved: u64,
    pub used: u64,
    pub mem: u64,
    pub next: u64,
    pub gc_heap: u64,
    pub high_alloc_mark: u64,
    pub flags: u64,
    pub background_allocated: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UsefulGlobals {
    pub array_mt: u64,
    pub string_mt: u64,
    pub object_mt: u64,
    pub exception_mt: u64,
    pub free_mt: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandleData {
    pub app_domain: u64,
    pub handle: u64,
    pub secondary: u64,
    pub kind: u32,
    pub strong: i32,
    pub ref_count: u32,
    pub jupiter_ref_count: u32,
    pub pegged: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackRefData {
    pub has_register_information: i32,
    pub register: i32,
    pub offset: i32,
    pub address: u64,
    pub object: u64,
    pub flags: u32,
    pub source_type: i32,
    pub source: u64,
    pub stack_pointer: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CodeHeaderData {
    pub gc_info: u64,
    pub jit_type: i32,
    pub method_desc: u64,
    pub method_start: u64,
    pub method_size: u32,
    pub cold_region_start: u64,
    pub cold_region_size: u32,
    pub hot_region_size: u32,
}

const _: () = {
    assert!(size_of::<ThreadStoreData>() == 56);
    assert!(size_of::<ThreadData>() == 104);
    assert!(size_of::<SyncBlockData>() == 72);
    assert!(size_of::<MethodTableData>() == 72);
    assert!(size_of::<GcHeapData>() == 16);
    assert!(size_of::<GenerationData>() == 32);
    assert!(size_of::<GcHeapDetails>() == 288);
    assert!(size_of::<HeapSegmentData>() == 88);
    assert!(size_of::<UsefulGlobals>() == 40);
    assert!(size_of::<HandleData>() == 48);
    assert!(size_of::<StackRefData>() == 56);
    assert!(size_of::<CodeHeaderData>() == 56);
};

pub const IID_IMETADATAIMPORT: Guid =
    Guid(0x7DAC8207, 0xD3AE, 0x4c75, [0x9B, 0x67, 0x92, 0x80, 0x1A, 0x49, 0x7D, 0x44]);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AppDomainStoreData {
    pub shared_domain: u64,
    pub system_domain: u64,
    pub domain_count: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodTableFieldData {
    pub num_instance_fields: u16,
    pub num_static_fields: u16,
    pub num_thread_static_fields: u16,
    pub first_field: u64,
    pub context_static_offset: u16,
    pub context_statics_size: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldDescData {
    pub kind: u32,
    pub sig_type: u32,
    pub mt_of_type: u64,
    pub module_of_type: u64,
    pub token_of_type: u32,
    pub token: u32,
    pub mt_of_enclosing_class: u64,
    pub offset: u32,
    pub is_thread_local: i32,
    pub is_context_local: i32,
    pub is_static: i32,
    pub next_field: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainLocalModuleData {
    pub app_domain: u64,
    pub module_id: u64,
    pub class_data: u64,
    pub dynamic_class_table: u64,
    pub gc_static_data_start: u64,
    pub non_gc_static_data_start: u64,
}

const _: () = {
    assert!(size_of::<AppDomainStoreData>() == 24);
    assert!(size_of::<MethodTableFieldData>() == 24);
    assert!(size_of::<FieldDescData>() == 64);
    assert!(size_of::<DomainLocalModuleData>() == 48);
};
