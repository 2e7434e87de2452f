//! Runs the embedding examples as tests, so they keep working.

#[path = "../../examples/embed_memory.rs"]
mod embed_memory;

#[path = "../../examples/embed_folder.rs"]
#[allow(dead_code)] // its `main` is for `cargo run --example`
mod embed_folder;

#[test]
fn embed_memory_example_runs() {
    embed_memory::main().unwrap();
}

#[test]
fn embed_folder_example_runs() {
    embed_folder::run(None, None).unwrap();
}
