//! What the command lines of latentcam's programs share: where a program
//! finds its installed configuration file, and the shell completions and
//! manual page generated from its clap parser (the packages install both).

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;
/// The shells [`completions`] writes for.
pub use clap_complete::Shell;

/// The configuration file a program reads without `--config`: the file
/// the environment variable `env` names if it is set (empty: none, which
/// is how tests switch it off), else `installed` — if that file exists.
pub fn default_config(env: &str, installed: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(path) if path.is_empty() => return None,
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(installed),
    };
    path.is_file().then_some(path)
}

/// Writes the completion script of the program `name`, whose parser is
/// `Cli`, for `shell`.
pub fn completions<Cli: CommandFactory>(shell: Shell, name: &str, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), name, out);
}

/// Writes the manual page (roff) of the program whose parser is `Cli`.
pub fn manpage<Cli: CommandFactory>(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo-program")]
    struct Demo {
        /// A flag the outputs must know.
        #[arg(long)]
        some_flag: bool,
    }

    #[test]
    fn completions_and_manual_page_know_the_flags() {
        let mut script = Vec::new();
        completions::<Demo>(Shell::Bash, "demo-program", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("--some-flag"), "{script}");
        let mut page = Vec::new();
        manpage::<Demo>(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH demo-program"), "{page}");
    }

    #[test]
    fn an_empty_variable_means_no_default_file() {
        // A variable no other test sets; the file exists, so only the
        // empty value can hide it.
        let env = "LATENTCAM_CLI_TEST_CONFIG";
        let file = std::env::current_exe().unwrap();
        let installed = file.to_str().unwrap();
        // SAFETY: this test is the only one touching the variable.
        unsafe { std::env::set_var(env, "") };
        assert_eq!(default_config(env, installed), None);
        unsafe { std::env::set_var(env, installed) };
        assert_eq!(default_config(env, "/nonexistent"), Some(file.clone()));
        unsafe { std::env::remove_var(env) };
        assert_eq!(default_config(env, installed), Some(file));
        assert_eq!(default_config(env, "/nonexistent/host.toml"), None);
    }
}
