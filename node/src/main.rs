//! The `piazza-node` binary; see `piazza_node::cli`.

fn main() -> anyhow::Result<()> {
    piazza_node::cli::main_entry()
}
