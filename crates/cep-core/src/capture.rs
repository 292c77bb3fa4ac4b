//! Change capture: naming events as seed 000 does, and deciding when a statement's changes make
//! an anomaly (so a `DELETE` of 10,000 rows raises one alert, not 10,000).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    /// The `op` column of `cep.change_log`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
            Op::Truncate => "T",
        }
    }
}

/// What a captured table holds: seed 000's knowledge-graph nodes and relationships, or rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Relationship,
}

impl Kind {
    pub fn parse(s: Option<&str>) -> Result<Option<Kind>, String> {
        match s {
            None => Ok(None),
            Some("node") => Ok(Some(Kind::Node)),
            Some("relationship") => Ok(Some(Kind::Relationship)),
            Some(other) => Err(format!("kind: {other:?} is not 'node', 'relationship' or NULL")),
        }
    }
}

/// Seed 000's `EventType` for graph tables (`node_created`, `relationship_deleted`, ...), and
/// `insert` / `update` / `delete` / `truncate` for other tables.
pub fn event_type(kind: Option<Kind>, op: Op) -> &'static str {
    match (kind, op) {
        (_, Op::Truncate) => "truncate",
        (Some(Kind::Node), Op::Insert) => "node_created",
        (Some(Kind::Node), Op::Update) => "node_updated",
        (Some(Kind::Node), Op::Delete) => "node_deleted",
        (Some(Kind::Relationship), Op::Insert) => "relationship_created",
        (Some(Kind::Relationship), Op::Update) => "relationship_updated",
        (Some(Kind::Relationship), Op::Delete) => "relationship_deleted",
        (None, Op::Insert) => "insert",
        (None, Op::Update) => "update",
        (None, Op::Delete) => "delete",
    }
}

/// A statement that added `added` changes to a window that held `before` raises the anomaly
/// when it takes the count past `limit`: once per crossing, however many rows it touched.
pub fn crosses(before: i64, added: i64, limit: i64) -> bool {
    added > 0 && before <= limit && before + added > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_tables_get_the_seeds_event_types() {
        assert_eq!(event_type(Some(Kind::Node), Op::Insert), "node_created");
        assert_eq!(event_type(Some(Kind::Relationship), Op::Delete), "relationship_deleted");
        assert_eq!(event_type(None, Op::Update), "update");
        assert_eq!(event_type(Some(Kind::Node), Op::Truncate), "truncate");
        assert_eq!(Kind::parse(Some("edge")).unwrap_err(), "kind: \"edge\" is not 'node', 'relationship' or NULL");
    }

    #[test]
    fn an_anomaly_fires_once_per_crossing() {
        // 10,000 deletes in one statement over a limit of 20: one alert.
        assert!(crosses(0, 10_000, 20));
        // The window was already past the limit: no second alert.
        assert!(!crosses(10_000, 5, 20));
        // 20 is allowed; the 21st change crosses.
        assert!(!crosses(19, 1, 20));
        assert!(crosses(20, 1, 20));
        assert!(!crosses(5, 0, 20));
    }
}
