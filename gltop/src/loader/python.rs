//! The Python greenlet backend: a CPython process that has loaded the `greenlet` package
//! (>= 2.0), traced with no change to it.
//!
//! [`find`] looks for greenlet's extension module (`_greenlet*.so`) in the process's
//! memory map, finds the functions to probe in its symbol tables and the offsets the BPF
//! handlers need in its DWARF (with `object` and `gimli`); `bpf/python.bpf.h` has the
//! handlers, which feed the same maps as the Rust runtime's probes. The offsets differ
//! between greenlet versions, hence DWARF rather than constants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::process::Process;
use super::pymodule::{self, ModuleKind};
use super::Error;

/// The greenlet functions a Python process is traced at, by mangled-name fragment (the
/// Itanium C++ mangling of `greenlet::Class::method`), and whether gltop needs them.
pub const FUNCTIONS: [(&str, &str, bool); 7] = [
    ("switch", "8Greenlet15g_switch_finishE", true),
    ("start", "12UserGreenlet15inner_bootstrapE", true),
    ("new", "12UserGreenletC2E", false),
    ("new_main", "12MainGreenletC2E", false),
    ("finish", "11PythonState10did_finishE", false),
    ("dealloc", "12UserGreenletD2Ev", false),
    ("dealloc_main", "12MainGreenletD2Ev", false),
];

/// Where the BPF handlers find what they read, in bytes (see `bpf/python.bpf.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `Greenlet::_self`, the greenlet's `PyGreenlet*`.
    pub self_: u32,
    /// `Greenlet::switch_args` + `SwitchingArgs::_args`.
    pub args: u32,
    /// `Greenlet::switch_args` + `SwitchingArgs::_kwargs`.
    pub kwargs: u32,
    /// `switchstack_result_t::origin_greenlet`.
    pub origin: u32,
    /// `Greenlet::python_state`.
    pub python_state: u32,
    /// `PyObject::ob_type`.
    pub ob_type: u32,
    /// `PyTypeObject::tp_name`.
    pub tp_name: u32,
    /// `g_switch_finish` returns a class with a destructor, through a hidden first argument
    /// (Itanium C++ ABI), so `this` is the second.
    pub finish_slot: bool,
    /// `inner_bootstrap`'s origin is passed by reference (greenlet 2.0).
    pub origin_ref: bool,
    /// The `UserGreenlet` constructor's parent is passed by reference.
    pub parent_ref: bool,
}

/// Python greenlet as loaded by one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyGreenlet {
    /// The `.so` as mapped in the process (its path there).
    pub so: PathBuf,
    /// The same file, openable from here (through `/proc/PID/root`).
    pub path: PathBuf,
    /// The package's version (`greenlet.__version__`), if found beside the `.so`.
    pub version: Option<String>,
    /// The offsets the handlers need.
    pub offsets: Offsets,
    /// File offset of each function of [`FUNCTIONS`] found, by its short name.
    pub functions: Vec<(&'static str, u64)>,
    /// The symbol of each function found, by its short name.
    pub symbols: Vec<(&'static str, String)>,
    /// Optional functions of [`FUNCTIONS`] this build lacks.
    pub missing: Vec<&'static str>,
}

fn refuse(process: &Process, reason: impl Into<String>) -> Error {
    Error::Python {
        pid: process.pid,
        comm: process.comm.clone(),
        reason: reason.into(),
    }
}

/// Python greenlet in `process`: `Ok(None)` if the process is not CPython; an error that
/// says why when it is CPython but cannot be traced (no greenlet loaded, greenlet 1.x, no
/// DWARF).
pub fn find(process: &Process) -> Result<Option<PyGreenlet>, Error> {
    let pid = process.pid;
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let mapped = pymodule::mappings(pid).map_err(|e| Error::from_io(e, &maps_path))?;
    let exe = std::fs::read_link(process.exe()).unwrap_or_default();
    let Some((so, kind)) = pymodule::greenlet_module(&mapped) else {
        if pymodule::is_python(&exe.to_string_lossy(), &mapped) {
            return Err(refuse(
                process,
                "it is a Python process without greenlet loaded (no _greenlet*.so in its \
                 memory map): import greenlet (>= 2.0) in it, or trace another process",
            ));
        }
        return Ok(None);
    };
    let path = pymodule::from_here(pid, so);
    let version = pymodule::greenlet_version(&path);
    let bytes = std::fs::read(&path).map_err(|e| Error::from_io(e, &path))?;
    let file = object::File::parse(&*bytes).map_err(|e| Error::BadExecutable {
        path: PathBuf::from(so),
        reason: e.to_string(),
    })?;
    let named = |v: &Option<String>| v.as_deref().map_or(String::new(), |v| format!(" {v}"));
    let (found, missing) = functions(&file);
    let symbols = found.iter().map(|(n, _, s)| (*n, s.clone())).collect();
    let functions: Vec<(&'static str, u64)> = found.iter().map(|(n, o, _)| (*n, *o)).collect();
    if !functions.iter().any(|(n, _)| *n == "switch") {
        let old =
            version.as_deref().is_some_and(|v| v.starts_with("1.")) || kind == ModuleKind::Old;
        let reason = if old {
            format!(
                "greenlet{} is not supported (greenlet 1.x is C with static, inlined \
                 functions, nothing to probe): upgrade to greenlet >= 2.0",
                named(&version)
            )
        } else {
            format!(
                "{so} (greenlet{}) has no g_switch_finish symbol to probe: greenlet >= 2.0 \
                 with its symbol table is needed",
                named(&version)
            )
        };
        return Err(refuse(process, reason));
    }
    for needed in ["switch", "start"] {
        if !functions.iter().any(|(n, _)| *n == needed) {
            return Err(refuse(
                process,
                format!("{so} lacks greenlet's {needed} function"),
            ));
        }
    }
    let offsets = match offsets(&file) {
        Ok(o) => o,
        Err(DwarfError::None) => {
            return Err(refuse(
                process,
                format!(
                    "{so} (greenlet{}) has no DWARF debug info, which gltop reads its struct \
                     offsets from: install greenlet's debug info (the PyPI wheel ships it: \
                     `pip install --force-reinstall greenlet`; for a distribution's package, \
                     its debug-symbols package, e.g. python3-greenlet-dbgsym)",
                    named(&version)
                ),
            ))
        }
        Err(DwarfError::Missing(what)) => {
            return Err(refuse(
                process,
                format!(
                    "the DWARF of {so} (greenlet{}) lacks {what}",
                    named(&version)
                ),
            ))
        }
        Err(DwarfError::Bad(e)) => {
            return Err(Error::BadExecutable {
                path: PathBuf::from(so),
                reason: format!("cannot read its DWARF: {e}"),
            })
        }
    };
    Ok(Some(PyGreenlet {
        so: PathBuf::from(so),
        path,
        version,
        offsets,
        functions,
        symbols,
        missing,
    }))
}

/// Each function of [`FUNCTIONS`] that `file` defines (short name, file offset, symbol), and
/// the names of the optional ones it lacks.
type Found = Vec<(&'static str, u64, String)>;

fn functions(file: &object::File<'_>) -> (Found, Vec<&'static str>) {
    let mut found: Found = Vec::new();
    let symbols = file.symbols().chain(file.dynamic_symbols());
    for sym in symbols {
        if sym.kind() != object::SymbolKind::Text || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        // Not the compiler's partial clones (`.cold`, `.part.0`, `.isra.0`): entry points only.
        if !name.starts_with("_ZN8greenlet") || name.contains('.') {
            continue;
        }
        for (short, fragment, _) in FUNCTIONS {
            if name.contains(fragment) && !found.iter().any(|(n, _, _)| *n == short) {
                if let Some(off) = file_offset(file, sym.address()) {
                    found.push((short, off, name.to_string()));
                }
            }
        }
    }
    let missing = FUNCTIONS
        .iter()
        .filter(|(short, _, _)| !found.iter().any(|(n, _, _)| n == short))
        .map(|(short, _, _)| *short)
        .collect();
    (found, missing)
}

/// A bpftrace program for process `pid` with this greenlet's functions and offsets filled in:
/// it counts switches and throws per (origin, target) `PyGreenlet*` until the process exits
/// (or Ctrl-C), then prints the counts (`@switches[origin, target]: N`, `@throws[...]`).
/// It sees what gltop's exact mode sees, with none of its bookkeeping.
pub fn bpftrace_program(pid: i32, py: &PyGreenlet) -> String {
    let o = &py.offsets;
    let sym = |short: &str| {
        py.symbols
            .iter()
            .find(|(n, _)| *n == short)
            .map(|(_, s)| s.as_str())
            .unwrap_or("")
    };
    // The path as the process maps it, when it is the same file from here.
    let so = if Path::new(&py.so).exists() {
        py.so.clone()
    } else {
        py.path.clone()
    };
    let so = so.display();
    let (this, err) = if o.finish_slot {
        ("arg1", "arg2")
    } else {
        ("arg0", "arg1")
    };
    let origin = if o.origin_ref {
        "*(uint64 *)arg1"
    } else {
        "arg1"
    };
    let version = py.version.as_deref().unwrap_or("unknown");
    format!(
        "#!/usr/bin/env bpftrace
// Switches and throws per (origin, target) greenlet of Python process {pid}
// (greenlet {version}, {so}), as greenlet.settrace sees them. Made by
// `gltop -p {pid} --print-bpftrace`; run it as root with `bpftrace FILE`;
// a map holds 4096 pairs unless BPFTRACE_MAP_KEYS_MAX says more (in its environment).
// Greenlets are PyGreenlet addresses; a throw is a transfer whose pending
// arguments (_args at +{args}, _kwargs at +{kwargs}) are both NULL.

BEGIN {{ printf(\"attached to process {pid}\\n\"); }}

// Greenlet::g_switch_finish: every switch into a started greenlet.
uprobe:{so}:{finish} /pid == {pid}/ {{
  $target = *(uint64 *)({this} + {self_});
  $origin = *(uint64 *)({err} + {origin_off});
  if (*(uint64 *)({this} + {args}) == 0 && *(uint64 *)({this} + {kwargs}) == 0) {{
    @throws[$origin, $target] = count();
  }} else {{
    @switches[$origin, $target] = count();
  }}
}}

// UserGreenlet::inner_bootstrap: the first switch into a greenlet.
uprobe:{so}:{start} /pid == {pid}/ {{
  $target = *(uint64 *)(arg0 + {self_});
  $origin = {origin};
  if (*(uint64 *)(arg0 + {args}) == 0 && *(uint64 *)(arg0 + {kwargs}) == 0) {{
    @throws[$origin, $target] = count();
  }} else {{
    @switches[$origin, $target] = count();
  }}
}}

// The process's main thread exits: print the counts and stop.
tracepoint:sched:sched_process_exit /pid == {pid} && tid == {pid}/ {{ exit(); }}
",
        finish = sym("switch"),
        start = sym("start"),
        self_ = o.self_,
        args = o.args,
        kwargs = o.kwargs,
        origin_off = o.origin,
    )
}

/// The file offset of virtual address `addr`, through the loadable segments.
fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (addr >= start && addr < start + size).then(|| addr - start + off)
    })
}

/// Why the offsets could not be read.
#[derive(Debug)]
enum DwarfError {
    /// No `.debug_info` at all.
    None,
    /// A struct, member or function gltop needs is not described.
    Missing(String),
    /// The DWARF could not be parsed.
    Bad(String),
}

impl From<gimli::Error> for DwarfError {
    fn from(e: gimli::Error) -> Self {
        DwarfError::Bad(e.to_string())
    }
}

type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// A described type, as far as gltop needs it.
#[derive(Clone, Debug, Default)]
struct TypeInfo {
    tag: u16,
    /// The type it refers to (typedef, const, pointer, reference...).
    inner: Option<(usize, UnitOffset)>,
    /// Data members: name -> (offset, type).
    members: HashMap<String, (u64, Option<(usize, UnitOffset)>)>,
    /// Whether it declares a destructor.
    has_dtor: bool,
    /// Member functions: name -> (return type, parameter types without `this`).
    methods: HashMap<String, MethodInfo>,
}

#[derive(Clone, Debug, Default)]
struct MethodInfo {
    ret: Option<(usize, UnitOffset)>,
    params: Vec<Option<(usize, UnitOffset)>>,
}

/// The types of every unit, and the complete struct/class definitions by qualified name.
#[derive(Default)]
struct Types {
    by_offset: HashMap<(usize, UnitOffset), TypeInfo>,
    by_name: HashMap<String, (usize, UnitOffset)>,
}

impl Types {
    fn get(&self, key: Option<(usize, UnitOffset)>) -> Option<&TypeInfo> {
        self.by_offset.get(&key?)
    }

    /// Through typedefs and cv-qualifiers to the type itself.
    fn strip(&self, mut key: Option<(usize, UnitOffset)>) -> Option<&TypeInfo> {
        for _ in 0..16 {
            let t = self.get(key)?;
            match gimli::DwTag(t.tag) {
                gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
                    key = t.inner
                }
                _ => return Some(t),
            }
        }
        None
    }

    fn class(&self, name: &str) -> Result<&TypeInfo, DwarfError> {
        self.by_name
            .get(name)
            .and_then(|k| self.by_offset.get(k))
            .ok_or_else(|| DwarfError::Missing(format!("a definition of {name}")))
    }

    fn member(&self, class: &str, member: &str) -> Result<(u64, &TypeInfo), DwarfError> {
        let c = self.class(class)?;
        let missing = || DwarfError::Missing(format!("{class}::{member}"));
        let &(off, ty) = c.members.get(member).ok_or_else(missing)?;
        Ok((off, self.strip(ty).ok_or_else(missing)?))
    }
}

fn name_of<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    unit: &gimli::Unit<R<'a>>,
    e: &gimli::DebuggingInformationEntry<R<'a>>,
) -> Option<String> {
    let v = e.attr_value(gimli::DW_AT_name)?;
    let s = dwarf.attr_string(unit, v).ok()?;
    Some(s.to_string_lossy().into_owned())
}

fn type_of(
    unit: usize,
    e: &gimli::DebuggingInformationEntry<R<'_>>,
) -> Option<(usize, UnitOffset)> {
    match e.attr_value(gimli::DW_AT_type)? {
        AttributeValue::UnitRef(o) => Some((unit, o)),
        _ => None,
    }
}

/// Walks one DIE and its children, recording types; `scope` is the qualified name of the
/// enclosing namespace or class.
fn walk<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    unit: &gimli::Unit<R<'a>>,
    ui: usize,
    node: gimli::EntriesTreeNode<'_, '_, R<'a>>,
    scope: &str,
    types: &mut Types,
) -> Result<(), DwarfError> {
    let e = node.entry().clone();
    let tag = e.tag();
    let name = name_of(dwarf, unit, &e);
    let is_class = matches!(
        tag,
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type
    );
    let qualified = match &name {
        Some(n) if scope.is_empty() => n.clone(),
        Some(n) => format!("{scope}::{n}"),
        None => scope.to_string(),
    };
    let key = (ui, e.offset());
    if matches!(
        tag,
        gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type
            | gimli::DW_TAG_base_type
    ) || is_class
    {
        types.by_offset.insert(
            key,
            TypeInfo {
                tag: tag.0,
                inner: type_of(ui, &e),
                ..TypeInfo::default()
            },
        );
    }
    let declaration = matches!(
        e.attr_value(gimli::DW_AT_declaration),
        Some(AttributeValue::Flag(true))
    );
    if is_class && name.is_some() && !declaration {
        types.by_name.entry(qualified.clone()).or_insert(key);
    }
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let c = child.entry().clone();
        if is_class {
            match c.tag() {
                gimli::DW_TAG_member => {
                    let off = match c.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Udata(o)) => Some(o),
                        Some(AttributeValue::Data1(o)) => Some(o.into()),
                        Some(AttributeValue::Data2(o)) => Some(o.into()),
                        Some(AttributeValue::Data4(o)) => Some(o.into()),
                        Some(AttributeValue::Sdata(o)) => u64::try_from(o).ok(),
                        _ => None,
                    };
                    if let (Some(n), Some(off)) = (name_of(dwarf, unit, &c), off) {
                        if let Some(t) = types.by_offset.get_mut(&key) {
                            t.members.insert(n, (off, type_of(ui, &c)));
                        }
                    }
                    continue;
                }
                gimli::DW_TAG_subprogram => {
                    let n = name_of(dwarf, unit, &c).unwrap_or_default();
                    let mut m = MethodInfo {
                        ret: type_of(ui, &c),
                        params: Vec::new(),
                    };
                    let mut params = child.children();
                    while let Some(p) = params.next()? {
                        let p = p.entry();
                        let artificial = matches!(
                            p.attr_value(gimli::DW_AT_artificial),
                            Some(AttributeValue::Flag(true))
                        );
                        if p.tag() == gimli::DW_TAG_formal_parameter && !artificial {
                            m.params.push(type_of(ui, p));
                        }
                    }
                    if let Some(t) = types.by_offset.get_mut(&key) {
                        if n.starts_with('~') {
                            t.has_dtor = true;
                        }
                        t.methods.entry(n).or_insert(m);
                    }
                    continue;
                }
                _ => {}
            }
        }
        let inner_scope = if is_class || tag == gimli::DW_TAG_namespace {
            qualified.as_str()
        } else {
            scope
        };
        if matches!(tag, gimli::DW_TAG_compile_unit | gimli::DW_TAG_namespace) || is_class {
            walk(dwarf, unit, ui, child, inner_scope, types)?;
        } else {
            // Types inside functions are not needed.
        }
    }
    Ok(())
}

/// Reads [`Offsets`] from the DWARF of `file`.
fn offsets(file: &object::File<'_>) -> Result<Offsets, DwarfError> {
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let Some(info) = file.section_by_name(".debug_info") else {
        return Err(DwarfError::None);
    };
    if info
        .compressed_file_range()
        .is_ok_and(|r| r.format != object::CompressionFormat::None)
    {
        return Err(DwarfError::Bad(
            "compressed DWARF sections are not supported".into(),
        ));
    }
    let load = |id: gimli::SectionId| -> Result<R<'_>, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, endian))
    };
    let dwarf = gimli::Dwarf::load(load)?;
    let mut types = Types::default();
    let mut units = dwarf.units();
    let mut ui = 0;
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut tree = unit.entries_tree(None)?;
        walk(&dwarf, &unit, ui, tree.root()?, "", &mut types)?;
        ui += 1;
    }
    let types = types;

    // `_self` is in the base class since 3.1; before, each subclass has its own, and the
    // handlers read it from either (a transfer's target may be a main greenlet).
    let self_ = match types.member("greenlet::Greenlet", "_self") {
        Ok((off, _)) => off,
        Err(_) => {
            let (user, _) = types.member("greenlet::UserGreenlet", "_self")?;
            let (main, _) = types.member("greenlet::MainGreenlet", "_self")?;
            if user != main {
                return Err(DwarfError::Missing(format!(
                    "one offset of _self (UserGreenlet has it at {user}, MainGreenlet at {main})"
                )));
            }
            user
        }
    };
    let (switch_args, _) = types.member("greenlet::Greenlet", "switch_args")?;
    let (python_state, _) = types.member("greenlet::Greenlet", "python_state")?;
    let (args, _) = types.member("greenlet::SwitchingArgs", "_args")?;
    let (kwargs, _) = types.member("greenlet::SwitchingArgs", "_kwargs")?;
    let (origin, _) = types.member(
        "greenlet::Greenlet::switchstack_result_t",
        "origin_greenlet",
    )?;
    let (ob_type, _) = types.member("_object", "ob_type")?;
    let (tp_name, _) = types.member("_typeobject", "tp_name")?;

    let method = |class: &str, name: &str| -> Result<&MethodInfo, DwarfError> {
        types
            .class(class)?
            .methods
            .get(name)
            .ok_or_else(|| DwarfError::Missing(format!("{class}::{name}")))
    };
    // A class with a destructor is returned (and passed) through memory: Itanium C++ ABI.
    let by_memory = |t: Option<&TypeInfo>| {
        t.is_some_and(|t| {
            matches!(
                gimli::DwTag(t.tag),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type
            ) && t.has_dtor
        })
    };
    let is_ref = |t: Option<&TypeInfo>| {
        t.is_some_and(|t| {
            matches!(
                gimli::DwTag(t.tag),
                gimli::DW_TAG_reference_type | gimli::DW_TAG_rvalue_reference_type
            )
        })
    };
    let finish = method("greenlet::Greenlet", "g_switch_finish")?;
    let finish_slot = by_memory(types.strip(finish.ret));
    let boot = method("greenlet::UserGreenlet", "inner_bootstrap")?;
    let origin_t = types.strip(boot.params.first().copied().flatten());
    let origin_ref = is_ref(origin_t);
    let ctor = types
        .class("greenlet::UserGreenlet")?
        .methods
        .get("UserGreenlet");
    let parent_t = ctor.and_then(|c| types.strip(c.params.get(1).copied().flatten()));
    let parent_ref = is_ref(parent_t) || by_memory(parent_t);
    let small = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| DwarfError::Bad(format!("offset of {what} is {v}")))
    };
    Ok(Offsets {
        self_: small(self_, "_self")?,
        args: small(switch_args + args, "_args")?,
        kwargs: small(switch_args + kwargs, "_kwargs")?,
        origin: small(origin, "origin_greenlet")?,
        python_state: small(python_state, "python_state")?,
        ob_type: small(ob_type, "ob_type")?,
        tp_name: small(tp_name, "tp_name")?,
        finish_slot,
        origin_ref,
        parent_ref,
    })
}
