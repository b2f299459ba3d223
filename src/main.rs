//! The `pairlink` binary: options, logger, serve.
#![forbid(unsafe_code)]

use pairlink::config::{self, Parsed};
use std::process::ExitCode;

fn main() -> ExitCode {
    // A logger at the default level first, so that warnings raised while
    // reading the options (a loose cookie file mode) are not lost.
    pairlink::logger::init(log::LevelFilter::Info);
    let parsed = config::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let config = match parsed {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pairlink: {e}");
            return ExitCode::from(2);
        }
    };
    log::set_max_level(config.log_level);
    // A misspelt variable would otherwise leave its option at the default
    // without a word (say `PAIRLINK_PEER_LIST`: a node without peers).
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("PAIRLINK_") && !config::is_known_env(&name) {
            log::warn!("{name} is not a pairlink variable; ignored (see --help)");
        }
    }
    match pairlink::io::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("cannot serve: {e}");
            ExitCode::from(1)
        }
    }
}
