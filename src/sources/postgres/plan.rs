//! The SQL a source runs, built once from the config: the query form (a
//! cursor over the operator's query) and the table form (keyset pages on
//! the id column).

use crate::config::{PostgresRead, PostgresTable};

/// Name of the scan cursor (the query form).
const CURSOR: &str = "agent_supervisor_scan";
/// Name given to the query's first column for point reads.
const ID_ALIAS: &str = "agent_supervisor_id";

/// The SQL a source runs, built once.
pub(super) enum Plan {
    Query {
        declare: String,
        fetch: String,
        point: String,
    },
    Table {
        first: String,
        next: String,
        point: String,
    },
}

/// `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(super) fn plan(read: &PostgresRead, page_size: usize) -> Plan {
    match read {
        PostgresRead::Query(query) => Plan::Query {
            declare: format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR {query}"),
            fetch: format!("FETCH FORWARD {page_size} FROM {CURSOR}"),
            point: format!(
                "SELECT * FROM ({query}\n) AS agent_supervisor_q({ID_ALIAS}) \
                 WHERE {ID_ALIAS}::text = ANY($1)"
            ),
        },
        PostgresRead::Table(t) => table_plan(t, page_size),
    }
}

fn table_plan(t: &PostgresTable, page_size: usize) -> Plan {
    let table = match &t.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&t.table)),
        None => quote_ident(&t.table),
    };
    let id = quote_ident(&t.id_column);
    let mut columns = format!("{id}::text, {}", quote_ident(&t.timestamp_column));
    if let Some(status) = &t.status_column {
        columns.push_str(", ");
        columns.push_str(&quote_ident(status));
        // As text: a custom (enum) type would make sqlx look the type up
        // mid-statement, which discards the unnamed statement; booleans
        // become `true`/`false`, both understood.
        columns.push_str("::text");
    }
    let mut cond = format!("{id} IS NOT NULL");
    if let Some(filter) = &t.filter {
        cond = format!("({filter}\n) AND {cond}");
    }
    Plan::Table {
        first: format!(
            "SELECT {columns} FROM {table} WHERE {cond} ORDER BY {id}::text LIMIT {page_size}"
        ),
        next: format!(
            "SELECT {columns} FROM {table} WHERE {cond} AND {id}::text > $1 \
             ORDER BY {id}::text LIMIT {page_size}"
        ),
        point: format!("SELECT {columns} FROM {table} WHERE {cond} AND {id}::text = ANY($1)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_ident("agent_id"), "\"agent_id\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn table_plan_quotes_schema_table_and_columns() {
        let t = PostgresTable {
            schema: Some("public".into()),
            table: "Agent State".into(),
            id_column: "agent_id".into(),
            timestamp_column: "updated_at".into(),
            status_column: Some("status".into()),
            filter: Some("kind = 'x'".into()),
        };
        let Plan::Table { first, next, point } = table_plan(&t, 100) else {
            panic!()
        };
        assert_eq!(
            first,
            "SELECT \"agent_id\"::text, \"updated_at\", \"status\"::text FROM \"public\".\"Agent State\" \
             WHERE (kind = 'x'\n) AND \"agent_id\" IS NOT NULL ORDER BY \"agent_id\"::text LIMIT 100"
        );
        assert!(next.contains("\"agent_id\"::text > $1"), "{next}");
        assert!(point.ends_with("\"agent_id\"::text = ANY($1)"), "{point}");
    }
}
