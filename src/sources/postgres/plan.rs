//! The SQL a source runs, built once from the config: the query form (a
//! cursor over the operator's query) and the table form (keyset pages on
//! the id column).

use crate::config::{PostgresRead, PostgresTable};

/// Name given to the query's first column for point reads.
const ID_ALIAS: &str = "agent_supervisor_id";
/// Name of the described query.
const DESCRIBED: &str = "agent_supervisor_q";

/// The SQL a source runs, built once.
pub(super) enum Plan {
    Query {
        /// A row of NULLs with the query's column types.
        describe: String,
        /// The query's rows in binary `COPY` format.
        copy: String,
        point: String,
    },
    Table(TablePlan),
}

/// The SQL of the table form.
pub(super) struct TablePlan {
    /// A row of NULLs with a page's column types.
    pub(super) describe: String,
    /// The rows to read, without order or limit.
    select: String,
    /// The id column, quoted.
    id: String,
    page_size: usize,
    pub(super) point: String,
}

impl TablePlan {
    /// The `COPY` of the page after the id `after` (the first page
    /// without).
    pub(super) fn page(&self, after: Option<&str>) -> String {
        let Self {
            select,
            id,
            page_size,
            ..
        } = self;
        let after = match after {
            Some(last) => format!(" AND {id}::text > {}", text_literal(last)),
            None => String::new(),
        };
        copy(&format!(
            "{select}{after} ORDER BY {id}::text LIMIT {page_size}"
        ))
    }
}

/// `"name"`, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A text literal in the escape-string form, which reads the same whatever
/// `standard_conforming_strings` is: backslashes and quotes doubled.
fn text_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// One row of NULLs typed like the rows of `select`, which is planned but
/// not run: the planner proves the joined side empty (`ON false`) and never
/// executes it, however costly or slow the query.
fn describe(select: &str) -> String {
    format!(
        "SELECT {DESCRIBED}.* FROM (VALUES (1)) AS agent_supervisor_one(x) \
         LEFT JOIN ({select}\n) AS {DESCRIBED} ON false"
    )
}

/// The rows of `select` in binary `COPY` format.
fn copy(select: &str) -> String {
    format!("COPY ({select}\n) TO STDOUT (FORMAT binary)")
}

pub(super) fn plan(read: &PostgresRead, page_size: usize) -> Plan {
    match read {
        PostgresRead::Query(query) => Plan::Query {
            describe: describe(query),
            copy: copy(query),
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
    let select = format!("SELECT {columns} FROM {table} WHERE {cond}");
    Plan::Table(TablePlan {
        describe: describe(&select),
        point: format!("{select} AND {id}::text = ANY($1)"),
        select,
        id,
        page_size,
    })
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
        let Plan::Table(plan) = table_plan(&t, 100) else {
            panic!("a table plan")
        };
        let select = "SELECT \"agent_id\"::text, \"updated_at\", \"status\"::text FROM \
                      \"public\".\"Agent State\" WHERE (kind = 'x'\n) AND \"agent_id\" IS NOT NULL";
        assert_eq!(
            plan.page(None),
            format!(
                "COPY ({select} ORDER BY \"agent_id\"::text LIMIT 100\n) TO STDOUT (FORMAT binary)"
            )
        );
        let next = plan.page(Some("it's a\\b"));
        assert!(
            next.contains(" AND \"agent_id\"::text > E'it''s a\\\\b' ORDER BY"),
            "{next}"
        );
        let TablePlan {
            describe, point, ..
        } = plan;
        assert!(
            describe.contains(&format!("LEFT JOIN ({select}\n) AS")),
            "{describe}"
        );
        assert!(point.ends_with("\"agent_id\"::text = ANY($1)"), "{point}");
    }
}
