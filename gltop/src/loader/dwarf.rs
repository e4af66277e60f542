//! Struct layouts from a file's DWARF (`gimli`): the size and member offsets of the structs
//! a Python backend reads from outside (greenlet's thread state, CPython's interpreter and
//! frame structs). The exact backend's reader in [`super::python`] goes further (member
//! types, methods and their parameters) and keeps its own type graph.

use std::collections::HashMap;

use gimli::{EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

/// DWARF sections borrowed from the file's bytes.
pub type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The DWARF of `file` (little-endian: x86-64 only); sections it lacks read as empty.
pub fn load<'a>(file: &object::File<'a>) -> Result<gimli::Dwarf<Slice<'a>>, gimli::Error> {
    gimli::Dwarf::load(|id| {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok::<_, gimli::Error>(EndianSlice::new(data, LittleEndian))
    })
}

/// A struct to look for.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'n> {
    /// Its name: the struct's or class's own, or a typedef's that names it.
    pub name: &'n str,
    /// Whether `name` is a prefix (`ThreadStateCreator<` of a template's instances).
    pub prefix: bool,
    /// Members it must have: the first complete definition with all of them is taken.
    pub members: &'n [&'n str],
}

impl<'n> Wanted<'n> {
    /// A struct by its exact name (or a typedef's), with these members.
    pub fn named(name: &'n str, members: &'n [&'n str]) -> Self {
        Wanted {
            name,
            prefix: false,
            members,
        }
    }

    fn matches(&self, name: &str) -> bool {
        if self.prefix {
            name.starts_with(self.name)
        } else {
            name == self.name
        }
    }
}

/// A struct's size and every member's offset (not only the wanted ones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StructInfo {
    /// `DW_AT_byte_size` (0 if absent).
    pub size: u64,
    /// Member name -> byte offset.
    pub members: HashMap<String, u64>,
}

impl StructInfo {
    /// The offset of `member`.
    pub fn offset(&self, member: &str) -> Option<u64> {
        self.members.get(member).copied()
    }

    fn has_all(&self, members: &[&str]) -> bool {
        members.iter().all(|m| self.members.contains_key(*m))
    }
}

fn name_of<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    e: &gimli::DebuggingInformationEntry<Slice<'a>>,
) -> Option<String> {
    let v = e.attr_value(gimli::DW_AT_name)?;
    Some(
        dwarf
            .attr_string(unit, v)
            .ok()?
            .to_string()
            .ok()?
            .to_string(),
    )
}

fn udata(e: &gimli::DebuggingInformationEntry<Slice<'_>>, at: gimli::DwAt) -> Option<u64> {
    e.attr_value(at).and_then(|v| v.udata_value())
}

fn is_definition(e: &gimli::DebuggingInformationEntry<Slice<'_>>) -> bool {
    matches!(
        e.tag(),
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type
    ) && e.attr_value(gimli::DW_AT_declaration).is_none()
}

/// The members among the direct children of the struct at the cursor's entry (depth
/// `base`), read to the end of it. For a typedef's target, read on its own cursor.
fn read_members<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    cursor: &mut gimli::EntriesCursor<'_, Slice<'a>>,
    info: &mut StructInfo,
    base: isize,
) -> Result<(), gimli::Error> {
    while let Some(e) = cursor.next_dfs()? {
        if e.depth() <= base {
            break;
        }
        member(dwarf, unit, e, base, info);
    }
    Ok(())
}

/// Records `e` in `info` if it is a direct member of the struct at depth `base`.
fn member<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    e: &gimli::DebuggingInformationEntry<Slice<'a>>,
    base: isize,
    info: &mut StructInfo,
) {
    if e.depth() == base + 1 && e.tag() == gimli::DW_TAG_member {
        if let (Some(n), Some(off)) = (
            name_of(dwarf, unit, e),
            udata(e, gimli::DW_AT_data_member_location),
        ) {
            info.members.insert(n, off);
        }
    }
}

/// For each of `wanted`, the first complete definition in `dwarf` that matches its name and
/// has its members; `None` where there is none. Stops reading once all are found.
pub fn structs(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    wanted: &[Wanted<'_>],
) -> Result<Vec<Option<StructInfo>>, gimli::Error> {
    let mut out: Vec<Option<StructInfo>> = vec![None; wanted.len()];
    // Records `info` for every wanted struct it matches, unless one is already found.
    let keep = |out: &mut Vec<Option<StructInfo>>, matched: &[usize], info: StructInfo| {
        for &i in matched {
            if out[i].is_none() && info.has_all(wanted[i].members) {
                out[i] = Some(info.clone());
            }
        }
    };
    let matching = |out: &[Option<StructInfo>], name: &str| -> Vec<usize> {
        (0..wanted.len())
            .filter(|&i| out[i].is_none() && wanted[i].matches(name))
            .collect()
    };
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        if out.iter().all(Option::is_some) {
            break;
        }
        let unit = dwarf.unit(header)?;
        // Typedefs naming a wanted struct (often an anonymous one), read after the walk.
        let mut typedefs: Vec<(Vec<usize>, gimli::UnitOffset)> = Vec::new();
        let mut cursor = unit.entries();
        // The struct being read: its depth, the wanted entries it matches, what it has.
        let mut inside: Option<(isize, Vec<usize>, StructInfo)> = None;
        while let Some(e) = cursor.next_dfs()? {
            let depth = e.depth();
            if let Some((base, _, info)) = &mut inside {
                if depth > *base {
                    member(dwarf, &unit, e, *base, info);
                    continue;
                }
                let (_, matched, info) = inside.take().expect("just matched");
                keep(&mut out, &matched, info);
            }
            if e.tag() == gimli::DW_TAG_typedef {
                if let (Some(n), Some(gimli::AttributeValue::UnitRef(to))) =
                    (name_of(dwarf, &unit, e), e.attr_value(gimli::DW_AT_type))
                {
                    let matched = matching(&out, &n);
                    if !matched.is_empty() {
                        typedefs.push((matched, to));
                    }
                }
            } else if is_definition(e) {
                if let Some(n) = name_of(dwarf, &unit, e) {
                    let matched = matching(&out, &n);
                    if !matched.is_empty() {
                        let size = udata(e, gimli::DW_AT_byte_size).unwrap_or(0);
                        inside = Some((
                            depth,
                            matched,
                            StructInfo {
                                size,
                                members: HashMap::new(),
                            },
                        ));
                    }
                }
            }
        }
        if let Some((_, matched, info)) = inside.take() {
            keep(&mut out, &matched, info);
        }
        for (matched, to) in typedefs {
            let mut c = unit.entries_at_offset(to)?;
            let Some(first) = c.next_dfs()? else {
                continue;
            };
            if !is_definition(first) {
                continue;
            }
            let base = first.depth();
            let mut info = StructInfo {
                size: udata(first, gimli::DW_AT_byte_size).unwrap_or(0),
                members: HashMap::new(),
            };
            read_members(dwarf, &unit, &mut c, &mut info, base)?;
            keep(&mut out, &matched, info);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read in this test binary's own DWARF: a struct of this module, by name and by prefix,
    /// with its members; one that lacks a wanted member is not taken.
    #[test]
    fn finds_structs_and_their_members_in_real_dwarf() {
        let data = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*data).unwrap();
        let dwarf = load(&file).unwrap();
        let wanted = [
            Wanted::named("StructInfo", &["size", "members"]),
            Wanted {
                name: "StructIn",
                prefix: true,
                members: &["size"],
            },
            Wanted::named("Wanted", &["name", "prefix", "members"]),
            Wanted::named("StructInfo", &["size", "no_such_member"]),
        ];
        let found = structs(&dwarf, &wanted[..3]).unwrap();
        let info = found[0].as_ref().expect("StructInfo");
        let expected = std::mem::size_of::<StructInfo>() as u64;
        assert_eq!(info.size, expected);
        let (size, members) = (
            info.offset("size").unwrap(),
            info.offset("members").unwrap(),
        );
        assert!(size < expected && members < expected && size != members);
        assert_eq!(
            found[1].as_ref().map(|i| i.size),
            Some(expected),
            "by prefix"
        );
        let w = found[2].as_ref().expect("Wanted");
        assert_eq!(w.size, std::mem::size_of::<Wanted<'_>>() as u64);
        assert_eq!(w.members.len(), 3);
        let none = structs(&dwarf, &wanted[3..]).unwrap();
        assert_eq!(none, vec![None]);
    }
}
