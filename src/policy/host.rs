//! Hostname index: exact names and domain suffixes in hash maps, looked up once per label boundary of the
//! target, so the cost depends on the number of labels in the name, not on the number of rules. Globs, which
//! cannot be hashed, go into one GlobSet.

use super::RuleRef;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashMap;

#[derive(Default)]
pub struct NameIndex {
    exact: HashMap<Box<str>, Vec<RuleRef>>,
    /// `.x`: x itself and every subdomain.
    apex_and_sub: HashMap<Box<str>, Vec<RuleRef>>,
    /// `*.x`: subdomains only.
    sub_only: HashMap<Box<str>, Vec<RuleRef>>,
    glob_refs: Vec<RuleRef>,
    glob_builder: Option<GlobSetBuilder>,
    globs: Option<GlobSet>,
}

impl NameIndex {
    pub fn add_exact(&mut self, name: &str, r: RuleRef) {
        self.exact.entry(name.into()).or_default().push(r);
    }

    pub fn add_suffix(&mut self, name: &str, include_apex: bool, r: RuleRef) {
        let map = if include_apex {
            &mut self.apex_and_sub
        } else {
            &mut self.sub_only
        };
        map.entry(name.into()).or_default().push(r);
    }

    /// `pattern` was validated by `parse_pattern`.
    pub fn add_glob(&mut self, pattern: &str, r: RuleRef) -> Result<(), globset::Error> {
        let glob = GlobBuilder::new(pattern).build()?;
        self.glob_builder
            .get_or_insert_with(GlobSetBuilder::new)
            .add(glob);
        self.glob_refs.push(r);
        Ok(())
    }

    pub fn finish(&mut self) -> Result<(), globset::Error> {
        if let Some(b) = self.glob_builder.take() {
            self.globs = Some(b.build()?);
        }
        Ok(())
    }

    /// Calls `f` for every rule reference whose pattern matches `name` (lowercase, no trailing dot).
    pub fn for_each_match(&self, name: &str, mut f: impl FnMut(&RuleRef)) {
        let mut visit = |refs: Option<&Vec<RuleRef>>| refs.into_iter().flatten().for_each(&mut f);
        visit(self.exact.get(name));
        visit(self.apex_and_sub.get(name));
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            visit(self.apex_and_sub.get(rest));
            visit(self.sub_only.get(rest));
        }
        if let Some(globs) = &self.globs {
            for i in globs.matches(name) {
                f(&self.glob_refs[i]);
            }
        }
    }
}
