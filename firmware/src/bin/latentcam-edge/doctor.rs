//! `latentcam-edge doctor`: the library's checks, printed, with an exit
//! status.

use crate::args::RunArgs;

/// Prints every check and exits 1 if any failed.
pub fn doctor(args: &RunArgs) -> anyhow::Result<()> {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL  config       {e:#}");
            println!(
                "{:19}fix: latentcam-edge check-config --config FILE shows the problem",
                ""
            );
            std::process::exit(1);
        }
    };
    let checks = latentcam_firmware::doctor::run(&config);
    for check in &checks {
        println!("{check}");
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    use latentcam_firmware::doctor::Level;
    println!(
        "doctor: {} OK, {} WARN, {} FAIL",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
    if count(Level::Fail) > 0 {
        std::process::exit(1);
    }
    Ok(())
}
