//! Roles: named sets of scopes that a client gets by owning `assume:<roleId>`.
//!
//! Expansion follows Taskcluster's auth service (`services/auth/src/trie.js` and the roles
//! manual) and repeats until nothing new appears:
//!
//! - a role `R` applies to an owned scope `s` when `s` satisfies `assume:R`, so `assume:R`,
//!   `assume:R*`-like prefixes and `*` all grant it;
//! - a role whose id ends in `*` (`project-admin:*`) applies to every owned scope starting with
//!   `assume:project-admin:`; the rest of the owned scope is the *parameter*, and `<..>` in the
//!   role's scopes is replaced by it. An owned star scope that stops short of the role's prefix
//!   (`assume:proj*`, `*`) applies too, with parameter `*`;
//! - when the parameter ends in `*`, everything from the `<..>` on is replaced by it, since a
//!   star parameter already covers whatever followed (`assume:project-admin:ops*` gives
//!   `secrets:get:project/ops*`, not `secrets:get:project/ops*/*`).
//!
//! As in Taskcluster, a role table is refused when a role could grant, directly or through
//! others, a scope that applies that same role again (checked with parameter `*`, the worst
//! case). Besides being what Taskcluster does, that is what makes expansion finite: a cycle
//! through a parameterized role could otherwise grow scopes forever.
//!
//! One deliberate difference: Taskcluster's resolver also feeds scopes like `:*` and `:a*` to
//! every role (a typo in its `ASSUME_PREFIX` pattern). Such scopes do not satisfy any
//! `assume:` scope, so here they grant nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::scopes::{ScopeSet, is_grantable_scope, is_valid_scope, satisfies};

const ASSUME: &str = "assume:";
const PARAMETER: &str = "<..>";

/// Why a role table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("role id `{0}` is not valid: it must be non-empty printable ASCII")]
    InvalidRoleId(String),
    #[error("role `{0}` is defined twice")]
    DuplicateRole(String),
    #[error("role `{role_id}` has an invalid scope `{scope}`: {reason}")]
    InvalidScope {
        role_id: String,
        scope: String,
        reason: &'static str,
    },
    #[error("roles may not contain dependency cycles, found: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// One role as configured (`[[auth.roles]]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub role_id: String,
    pub scopes: Vec<String>,
}

/// A validated, acyclic role table.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    rules: Vec<Rule>,
}

/// A role in the form expansion uses.
#[derive(Clone, Debug)]
struct Rule {
    role_id: String,
    /// `assume:<roleId>`, without the final `*` of a parameterized role.
    pattern: String,
    /// Whether the role id ends in `*`: the role applies to every scope with the prefix.
    prefix: bool,
    /// Scopes granted as they are.
    plain: Vec<String>,
    /// Scopes holding `<..>` (only for prefix roles; elsewhere `<..>` is literal text).
    parameterized: Vec<String>,
}

impl Rule {
    /// The parameter with which this role applies to the owned scope `scope`, if it does.
    /// Non-prefix roles have no parameter (the empty string, which they never use).
    fn parameter_for<'s>(&self, scope: &'s str) -> Option<&'s str> {
        if !self.prefix {
            return satisfies(scope, &self.pattern).then_some("");
        }
        if let Some(rest) = scope.strip_prefix(self.pattern.as_str()) {
            return Some(rest);
        }
        match scope.strip_suffix('*') {
            Some(stem) if self.pattern.starts_with(stem) => Some("*"),
            _ => None,
        }
    }

    /// The scopes the role grants with `parameter`.
    fn granted(&self, parameter: &str) -> impl Iterator<Item = String> + '_ {
        let parameter = parameter.to_owned();
        self.plain.iter().cloned().chain(
            self.parameterized
                .iter()
                .map(move |scope| substitute(scope, &parameter)),
        )
    }
}

/// Puts `parameter` in place of the `<..>` of `scope`; a parameter ending in `*` also replaces
/// everything after the `<..>`.
fn substitute(scope: &str, parameter: &str) -> String {
    match scope.find(PARAMETER) {
        Some(at) if parameter.ends_with('*') => format!("{}{parameter}", &scope[..at]),
        Some(at) => format!(
            "{}{parameter}{}",
            &scope[..at],
            &scope[at + PARAMETER.len()..]
        ),
        None => scope.to_owned(),
    }
}

/// Whether some role could apply to `scope`: it starts with `assume:`, or is a star scope whose
/// stem is a prefix of `assume:` (`*`, `a*`, …, `assume*`).
fn may_assume(scope: &str) -> bool {
    scope.starts_with(ASSUME)
        || scope
            .strip_suffix('*')
            .is_some_and(|stem| ASSUME.starts_with(stem))
}

impl Roles {
    /// Validates the roles: ids and scopes printable ASCII, no scope ending in `**`, at most
    /// one `<..>` per parameterized scope and none right after a `*` at its end (`a*<..>`, where
    /// that star would be ambiguous), and no dependency cycle.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Result<Roles, Error> {
        let mut seen = HashSet::new();
        let mut rules = Vec::new();
        for Role { role_id, scopes } in roles {
            if role_id.is_empty() || !is_valid_scope(&role_id) {
                return Err(Error::InvalidRoleId(role_id));
            }
            if !seen.insert(role_id.clone()) {
                return Err(Error::DuplicateRole(role_id));
            }
            let invalid = |scope: &str, reason| Error::InvalidScope {
                role_id: role_id.clone(),
                scope: scope.to_owned(),
                reason,
            };
            let prefix = role_id.ends_with('*');
            let mut plain = Vec::new();
            let mut parameterized = Vec::new();
            for scope in scopes {
                if !is_valid_scope(&scope) {
                    return Err(invalid(&scope, "scopes are printable ASCII"));
                }
                if !is_grantable_scope(&scope) {
                    return Err(invalid(&scope, "scopes must not end with `**`"));
                }
                if prefix && scope.contains(PARAMETER) {
                    if scope.matches(PARAMETER).count() > 1 {
                        return Err(invalid(&scope, "`<..>` may appear only once"));
                    }
                    if scope.ends_with("*<..>") {
                        return Err(invalid(
                            &scope,
                            "`*<..>` at the end is ambiguous about which star is a wildcard",
                        ));
                    }
                    parameterized.push(scope);
                } else {
                    plain.push(scope);
                }
            }
            let pattern = format!("{ASSUME}{}", role_id.strip_suffix('*').unwrap_or(&role_id));
            rules.push(Rule {
                role_id,
                pattern,
                prefix,
                plain: ScopeSet::new(plain).into_vec(),
                parameterized,
            });
        }
        let roles = Roles { rules };
        roles.check_acyclic()?;
        Ok(roles)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `scopes` with everything the roles grant, recursively, normalized.
    pub fn expand(&self, scopes: &ScopeSet) -> ScopeSet {
        let mut all: HashSet<String> = scopes.iter().map(str::to_owned).collect();
        let mut pending: Vec<String> = scopes
            .iter()
            .filter(|scope| may_assume(scope))
            .map(str::to_owned)
            .collect();
        // The role table is acyclic, so this ends: every grant goes one step down the
        // dependency order, and each step yields finitely many scopes.
        while let Some(scope) = pending.pop() {
            for rule in &self.rules {
                let Some(parameter) = rule.parameter_for(&scope) else {
                    continue;
                };
                for granted in rule.granted(parameter) {
                    if !all.contains(&granted) {
                        if may_assume(&granted) {
                            pending.push(granted.clone());
                        }
                        all.insert(granted);
                    }
                }
            }
        }
        ScopeSet::new(all)
    }

    /// Refuses the table if a role depends on itself. Role `A` depends on role `B` when one of
    /// `A`'s scopes, with `*` as the parameter, would make `B` apply.
    fn check_acyclic(&self) -> Result<(), Error> {
        let dependencies: Vec<Vec<usize>> = self
            .rules
            .iter()
            .map(|rule| {
                let scopes: Vec<String> = rule.granted("*").collect();
                (0..self.rules.len())
                    .filter(|&other| {
                        scopes
                            .iter()
                            .any(|scope| self.rules[other].parameter_for(scope).is_some())
                    })
                    .collect()
            })
            .collect();

        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; self.rules.len()];
        // Depth-first search with an explicit stack of (rule, next dependency to visit).
        for start in 0..self.rules.len() {
            if marks[start] != Mark::New {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some((rule, next)) = path.last_mut() {
                let rule = *rule;
                if let Some(&dependency) = dependencies[rule].get(*next) {
                    *next += 1;
                    match marks[dependency] {
                        Mark::Done => {}
                        Mark::OnPath => {
                            let from = path
                                .iter()
                                .position(|(on_path, _)| *on_path == dependency)
                                .unwrap_or(0);
                            let mut cycle: Vec<String> = path[from..]
                                .iter()
                                .map(|(on_path, _)| self.rules[*on_path].role_id.clone())
                                .collect();
                            cycle.push(self.rules[dependency].role_id.clone());
                            return Err(Error::Cycle(cycle));
                        }
                        Mark::New => {
                            marks[dependency] = Mark::OnPath;
                            path.push((dependency, 0));
                        }
                    }
                } else {
                    marks[rule] = Mark::Done;
                    path.pop();
                }
            }
        }
        Ok(())
    }
}

/// Builds roles from a `{roleId: [scopes]}` map, as configuration files hold them.
impl TryFrom<BTreeMap<String, Vec<String>>> for Roles {
    type Error = Error;

    fn try_from(map: BTreeMap<String, Vec<String>>) -> Result<Self, Error> {
        Roles::new(
            map.into_iter()
                .map(|(role_id, scopes)| Role { role_id, scopes }),
        )
    }
}

impl TryFrom<HashMap<String, Vec<String>>> for Roles {
    type Error = Error;

    fn try_from(map: HashMap<String, Vec<String>>) -> Result<Self, Error> {
        Roles::try_from(map.into_iter().collect::<BTreeMap<_, _>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(role_id: &str, scopes: &[&str]) -> Role {
        Role {
            role_id: role_id.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn set(scopes: &[&str]) -> ScopeSet {
        ScopeSet::new(scopes.iter().copied())
    }

    #[test]
    fn the_manual_examples() {
        let roles = Roles::new([
            role(
                "group:admins",
                &["admin-scope-1", "admin-scope-2", "assume:group:devs"],
            ),
            role("group:devs", &["dev-scope"]),
            role(
                "repo:github.com/taskcluster/taskcluster-auth",
                &["secrets:get:auth-tests"],
            ),
            role(
                "hook-id:taskcluster/*",
                &["queue:create-task:aws-provisioner/taskcluster-hooks"],
            ),
            role(
                "project-admin:*",
                &[
                    "auth:create-role:project-<..>/*",
                    "secrets:get:project/<..>/*",
                ],
            ),
        ])
        .unwrap();

        assert_eq!(
            roles.expand(&set(&["assume:group:admins", "my-scope"])),
            set(&[
                "admin-scope-1",
                "admin-scope-2",
                "assume:group:admins",
                "assume:group:devs",
                "dev-scope",
                "my-scope",
            ])
        );
        assert!(
            roles
                .expand(&set(&["assume:repo:github.com/taskcluster/*"]))
                .satisfies_scope("secrets:get:auth-tests")
        );
        assert!(
            roles
                .expand(&set(&["assume:hook-id:taskcluster/nightly-diagnostics"]))
                .satisfies_scope("queue:create-task:aws-provisioner/taskcluster-hooks")
        );
        assert_eq!(
            roles.expand(&set(&["assume:project-admin:zap"])),
            set(&[
                "assume:project-admin:zap",
                "auth:create-role:project-zap/*",
                "secrets:get:project/zap/*",
            ])
        );
        assert_eq!(
            roles.expand(&set(&["assume:project-admin:ops*"])),
            set(&[
                "assume:project-admin:ops*",
                "auth:create-role:project-ops*",
                "secrets:get:project/ops*",
            ])
        );
    }

    /// Cases of Taskcluster's role-expansion test suite (`services/auth/test/trietestcases.js`),
    /// restated: rules map raw patterns to raw scopes, and each input expands to the listed
    /// scopes (besides itself). Here every pattern, scope and input gets the `assume:` prefix,
    /// which does not change the outcome.
    fn check_cases(rules: &[(&str, &[&str])], cases: &[(&str, &[&str])]) {
        let prefixed = |scope: &str| format!("{ASSUME}{scope}");
        let roles = Roles::new(rules.iter().map(|(pattern, scopes)| Role {
            role_id: (*pattern).to_owned(),
            scopes: scopes.iter().map(|scope| prefixed(scope)).collect(),
        }))
        .unwrap();
        for (input, expected) in cases {
            let input = prefixed(input);
            let expanded = roles.expand(&ScopeSet::new([input.clone()]));
            let expected = ScopeSet::new(
                expected
                    .iter()
                    .map(|scope| prefixed(scope))
                    .chain([input.clone()]),
            );
            assert_eq!(expanded, expected, "expanding {input}");
        }
    }

    #[test]
    fn parameterized_direct() {
        check_cases(
            &[
                ("a", &["A"]),
                ("b", &["B", "C"]),
                ("c*", &["C"]),
                ("d*", &["D<..>"]),
                ("e*", &["E<..>F"]),
            ],
            &[
                ("a", &["A"]),
                ("b", &["B", "C"]),
                ("c", &["C"]),
                ("cccc", &["C"]),
                ("c*", &["C"]),
                ("dX", &["DX"]),
                ("dXYZ", &["DXYZ"]),
                ("d*", &["D*"]),
                ("dXY*", &["DXY*"]),
                ("eX", &["EXF"]),
                ("eXYZ", &["EXYZF"]),
                ("e*", &["E*"]),
                ("eXY*", &["EXY*"]),
                ("q", &[]),
                ("*", &["A", "B", "C", "D*", "E*"]),
            ],
        );
    }

    #[test]
    fn star_inside_a_role_id_is_literal() {
        check_cases(
            &[("a*a", &["A"])],
            &[
                ("a", &[]),
                ("a*", &["A"]),
                ("a*a", &["A"]),
                ("a*a*", &["A"]),
                ("a*aa*", &[]),
                ("b", &[]),
                ("", &[]),
                ("*", &["A"]),
            ],
        );
    }

    #[test]
    fn parameterized_indirect() {
        check_cases(
            &[
                ("a:*", &["q<..>"]),
                ("a", &["b"]),
                ("b", &["cc", "eX*"]),
                ("c*", &["dYY"]),
                ("d*", &["eZZZ"]),
                ("e*", &["f<..>g"]),
                ("ff*", &["h<..>j*"]),
                ("hej", &["hello"]),
                ("hej2", &["hello2"]),
                ("h*", &["H"]),
                ("q*", &["Q"]),
            ],
            &[
                ("a", &["b", "cc", "dYY", "eZZZ", "fZZZg", "eX*", "fX*"]),
                ("aa", &[]),
                ("a:a", &["qa", "Q"]),
                ("z", &[]),
                ("eU*", &["fU*"]),
                ("e*", &["f*", "h*", "hello", "hello2", "H"]),
                ("e123", &["f123g"]),
                ("hej", &["hello", "H"]),
                ("efy", &["ffyg", "hygj*", "H"]),
                ("ef*", &["ff*", "h*", "H"]),
                ("ffe", &["hej*", "hello", "hello2", "H"]),
                ("f*", &["h*", "H"]),
                ("ff", &["hj*", "H"]),
                (
                    "*",
                    &["q*", "b", "cc", "eX*", "dYY", "eZZZ", "f*", "h*", "H", "Q"],
                ),
            ],
        );
    }

    #[test]
    fn prefix_roles_form_a_hierarchy() {
        check_cases(
            &[
                ("a*", &["A<..>"]),
                ("aa*", &["AA<..>"]),
                ("aaa*", &["AAA<..>"]),
                ("ab*", &["AB<..>"]),
                ("abc*", &["ABC<..>"]),
            ],
            &[
                ("a", &["A"]),
                ("aa", &["Aa", "AA"]),
                ("aaa", &["Aaa", "AAa", "AAA"]),
                ("aa*", &["Aa*", "AA*"]),
                ("abcd", &["Abcd", "ABcd", "ABCd"]),
                ("ab*", &["Ab*", "AB*"]),
                ("a*", &["A*"]),
            ],
        );
    }

    #[test]
    fn non_assume_star_scopes_assume_every_role() {
        let roles = Roles::new([role("anonymous", &["queue:ping"]), role("x", &["y"])]).unwrap();
        for owned in ["*", "a*", "assume*", "assume:*", "assume:anon*"] {
            assert!(
                roles.expand(&set(&[owned])).satisfies_scope("queue:ping"),
                "{owned}"
            );
        }
        // Taskcluster's resolver lets `:*` assume everything by a typo; here it grants nothing.
        for owned in [
            ":*",
            "assumx*",
            "b*",
            "assume:anonymous:*",
            "assume:anonymousx",
        ] {
            assert_eq!(roles.expand(&set(&[owned])), set(&[owned]), "{owned}");
        }
    }

    #[test]
    fn angle_brackets_are_literal_in_non_prefix_roles() {
        let roles = Roles::new([role("plain", &["x:<..>"])]).unwrap();
        assert_eq!(
            roles.expand(&set(&["assume:plain"])),
            set(&["assume:plain", "x:<..>"])
        );
    }

    #[test]
    fn cycles_are_refused() {
        let cyclic: &[&[(&str, &[&str])]] = &[
            &[("a", &["a"])],
            &[("ab", &["a*"])],
            &[("a*", &["ab"])],
            &[("c", &["a"]), ("b", &["c"]), ("a", &["b"])],
            &[("c", &["a*"]), ("b", &["c"]), ("aa", &["b"])],
            &[("c", &["aa"]), ("b", &["c"]), ("a*", &["b"])],
            &[("c", &["aa"]), ("b", &["c"]), ("a*", &["b<..>"])],
            &[("c", &["aa"]), ("b", &["c"]), ("a*", &["b<..>c"])],
            &[
                ("ettt", &["aaa"]),
                ("d*", &["e<..>z"]),
                ("c*", &["dd<..>"]),
                ("bbb", &["cb"]),
                ("a*", &["b<..>c"]),
            ],
            // Would grow forever if it were allowed: a1 -> a11 -> a111 -> …
            &[("a*", &["a1<..>"])],
        ];
        for rules in cyclic {
            let roles = Roles::new(rules.iter().map(|(pattern, scopes)| {
                Role {
                    role_id: (*pattern).to_owned(),
                    scopes: scopes
                        .iter()
                        .map(|scope| format!("{ASSUME}{scope}"))
                        .collect(),
                }
            }));
            assert!(
                matches!(roles, Err(Error::Cycle(_))),
                "{rules:?} gave {roles:?}"
            );
        }
        // A role granting `*` assumes every role, itself included.
        assert!(matches!(
            Roles::new([role("admin", &["*"])]),
            Err(Error::Cycle(_))
        ));
        let Err(Error::Cycle(cycle)) = Roles::new([
            role("x", &["unrelated"]),
            role("a", &["assume:b"]),
            role("b", &["assume:a"]),
        ]) else {
            panic!("cycle not found");
        };
        assert_eq!(cycle, ["a", "b", "a"]);
    }

    #[test]
    fn acyclic_chains_are_accepted() {
        let roles = Roles::new([
            role("a", &["assume:b", "A"]),
            role("b", &["assume:c*", "B"]),
            role("c1", &["C1"]),
            role("c2", &["C2"]),
        ])
        .unwrap();
        assert_eq!(
            roles.expand(&set(&["assume:a"])),
            set(&["assume:a", "assume:b", "assume:c*", "A", "B", "C1", "C2"])
        );
    }

    #[test]
    fn invalid_roles_are_refused() {
        assert!(matches!(
            Roles::new([role("", &[])]),
            Err(Error::InvalidRoleId(_))
        ));
        assert!(matches!(
            Roles::new([role("a\n", &[])]),
            Err(Error::InvalidRoleId(_))
        ));
        assert!(matches!(
            Roles::new([role("a", &[]), role("a", &[])]),
            Err(Error::DuplicateRole(_))
        ));
        for scope in [
            "b<..>c<..>",
            "b<..>c<..>d",
            "b*<..>",
            "bc*<..>",
            "x**",
            "tab\t",
        ] {
            assert!(
                matches!(
                    Roles::new([role("a*", &[scope])]),
                    Err(Error::InvalidScope { .. })
                ),
                "{scope}"
            );
        }
        // A star followed by more text before the parameter is fine.
        assert!(Roles::new([role("a*", &["b*<..>c"])]).is_ok());
    }
}
