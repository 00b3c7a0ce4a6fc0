//! A `WHERE` clause built from optional filters: each condition names its values as the next
//! placeholders (`$1`, `$2`, …, which both engines accept), and the values are bound in that
//! order.

/// A value of a condition, bound as its placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// The conditions of a query (`1 = 1` when there are none) and their values.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    sql: Vec<String>,
    values: Vec<Bound>,
}

impl Conditions {
    /// The next placeholder, for `value`.
    pub(crate) fn bind(&mut self, value: Bound) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    /// Adds a condition (its placeholders taken from [`Conditions::bind`]).
    pub(crate) fn push(&mut self, condition: String) {
        self.sql.push(condition);
    }

    /// The conditions joined with `AND`.
    pub(crate) fn clause(&self) -> String {
        if self.sql.is_empty() {
            "1 = 1".to_owned()
        } else {
            self.sql.join(" AND ")
        }
    }

    /// The values, in placeholder order.
    pub(crate) fn into_values(self) -> Vec<Bound> {
        self.values
    }
}

/// Binds `values` to `query` in order (either engine).
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for v in $values {
            q = match v {
                $crate::storage::conditions::Bound::Text(t) => q.bind(t),
                $crate::storage::conditions::Bound::Int(i) => q.bind(i),
                $crate::storage::conditions::Bound::Bytes(b) => q.bind(b),
            };
        }
        q
    }};
}
pub(crate) use bind_all;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_values_in_order() {
        let mut c = Conditions::default();
        assert_eq!(c.clause(), "1 = 1");
        let a = c.bind(Bound::Text("w".into()));
        c.push(format!("workspace_id = {a}"));
        let (from, to) = (c.bind(Bound::Int(1)), c.bind(Bound::Int(2)));
        c.push(format!("at >= {from} AND at < {to}"));
        assert_eq!(c.clause(), "workspace_id = $1 AND at >= $2 AND at < $3");
        assert_eq!(c.into_values().len(), 3);
    }
}
