//! `piazza-node` under another name, for the integration tests (see `piazza_node::cli`).

fn main() -> anyhow::Result<()> {
    piazza_node::cli::main_entry()
}
