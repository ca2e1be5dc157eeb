//! The `husk` binary: see `husk_vmm::cli` for commands and exit statuses.

fn main() {
    // First thing: the boot trace measures from here.
    husk_vmm::trace::mark_main_start();
    std::process::exit(husk_vmm::cli::run(std::env::args_os()));
}
