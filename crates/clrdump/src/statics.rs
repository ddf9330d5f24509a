//! Static fields as GC roots, named: `static DiagScenarios.Processor.Current` rather than the
//! anonymous handle-held `Object[]` the runtime keeps them in. On .NET Core 3.1–8 a module's
//! reference-type statics of non-generic classes live at `DomainLocalModule`'s GC statics
//! base + the field's offset; the name comes from the module's metadata.

use std::collections::HashSet;

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::model::{GcRoot, RootSource};

/// CorElementType values of fields whose static storage holds an object reference. Value
/// types (0x11) are left out: boxed value-type statics are rare, whereas RVA statics
/// (`<PrivateImplementationDetails>` data blobs) are value types whose offset is not in the
/// GC statics at all, and reading them there yields garbage "roots".
const REFERENCE_KINDS: &[u32] = &[0x0e, 0x12, 0x14, 0x15, 0x1c, 0x1d];
/// Upper bound on fields walked per type (a corrupt count must not spin).
const MAX_FIELDS: u32 = 65_536;

/// Every non-null reference-type static of every loaded non-generic class. Failures on one
/// module or type skip it; the count of skipped modules is returned for a warning.
pub fn static_roots(dac: &Dac, core: &CoreDump) -> (Vec<GcRoot>, usize) {
    let mut roots = Vec::new();
    let mut failed = 0;
    let mut seen_modules = HashSet::new();
    let domains = dac.app_domains().unwrap_or_default();
    for domain in domains {
        for assembly in dac.assemblies(domain).unwrap_or_default() {
            for module in dac.modules(assembly).unwrap_or_default() {
                if !seen_modules.insert(module) {
                    continue;
                }
                if module_statics(dac, core, module, &mut roots).is_none() {
                    failed += 1;
                }
            }
        }
    }
    (roots, failed)
}

fn module_statics(dac: &Dac, core: &CoreDump, module: u64, roots: &mut Vec<GcRoot>) -> Option<()> {
    let dlm = dac.domain_local_module(module).ok()?;
    if dlm.gc_static_data_start == 0 {
        return Some(());
    }
    let mut metadata = None;
    let mts = dac.module_types(module).ok()?;
    for mt in mts {
        let Ok(fields) = dac.method_table_fields(mt) else { continue };
        if fields.num_static_fields == 0 || fields.first_field == 0 {
            continue;
        }
        let Ok(type_name) = dac.method_table_name(mt) else { continue };
        // Generic definitions keep their statics per instantiation (dynamic statics).
        if type_name.contains('`') {
            continue;
        }
        // The FieldDescs of a type are contiguous: the instance fields it introduces, then its
        // statics (thread statics counted among them). The instance count the DAC reports
        // includes the parents' fields, so subtract the parent's; reading past the end
        // crashes the DAC.
        let parent = dac.method_table(mt).map(|d| d.parent).unwrap_or(0);
        let inherited =
            if parent == 0 { 0 } else { dac.method_table_fields(parent).map_or(0, |p| p.num_instance_fields) };
        let introduced = fields.num_instance_fields.saturating_sub(inherited);
        let total = (u32::from(introduced) + u32::from(fields.num_static_fields)).min(MAX_FIELDS);
        let mut fd = fields.first_field;
        for _ in 0..total {
            let Ok(d) = dac.field_desc(fd) else { break };
            if d.is_static != 0
                && d.is_thread_local == 0
                && d.is_context_local == 0
                && REFERENCE_KINDS.contains(&d.kind)
            {
                let object = core.u64_at(dlm.gc_static_data_start + u64::from(d.offset)).unwrap_or(0);
                if object != 0 {
                    let md = metadata.get_or_insert_with(|| dac.metadata_import(module));
                    let field_name = md
                        .as_ref()
                        .and_then(|m| m.field_name(d.token))
                        .unwrap_or_else(|| format!("<field {:#x}>", d.token));
                    roots
                        .push(GcRoot { object, kind: RootSource::Static { type_name: type_name.clone(), field_name } });
                }
            }
            if d.next_field == 0 {
                break;
            }
            fd = d.next_field;
        }
    }
    Some(())
}
