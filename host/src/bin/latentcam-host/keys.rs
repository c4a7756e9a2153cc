//! `latentcam-host keys …`: the host's key and the registered devices.

use latentcam_host::auth;

use crate::args::{KeyDir, KeysCommand};

/// `latentcam-host keys …`.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Init {
            dir: KeyDir { dir },
        } => {
            let public = auth::init(&dir)?;
            eprintln!(
                "wrote {}; give every edge this public key as [link] host_key:",
                dir.join(auth::HOST_KEY_FILE).display()
            );
            println!("{public}");
        }
        KeysCommand::Show {
            dir: KeyDir { dir },
        } => println!("{}", auth::show(&dir)?),
        KeysCommand::Add {
            device,
            public_key,
            dir: KeyDir { dir },
        } => match auth::add(&dir, &device, public_key)? {
            Some(old) if old == public_key => {
                println!("{device}: already registered with this key")
            }
            Some(old) => println!("{device}: replaced key {old} with {public_key}"),
            None => println!("{device}: registered"),
        },
        KeysCommand::List {
            dir: KeyDir { dir },
        } => {
            for (device, key) in auth::list(&dir)?.iter() {
                println!("{key} {device}");
            }
        }
        KeysCommand::Revoke {
            device,
            dir: KeyDir { dir },
        } => {
            if !auth::revoke(&dir, &device)? {
                anyhow::bail!(
                    "{device:?} is not registered in {} (see `latentcam-host keys list --dir {}`)",
                    dir.join(auth::DEVICES_FILE).display(),
                    dir.display()
                );
            }
            println!("{device}: revoked; its next connection is refused");
        }
    }
    Ok(())
}
