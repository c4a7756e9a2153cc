//! What a host checks about a device before it interprets its latents.

use latentcam_firmware::manifest::Manifest;
use latentcam_wire::{AuthScheme, Codec, Hello, PROTOCOL_VERSION, WelcomeStatus};

/// Why a `Hello` is refused: the status sent back in `Welcome` and a reason
/// the device logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// Status for `Welcome`.
    pub status: WelcomeStatus,
    /// Human-readable reason.
    pub reason: String,
}

fn refuse(status: WelcomeStatus, reason: String) -> Result<(), Refusal> {
    Err(Refusal { status, reason })
}

/// Accepts a `Hello` only if the device id is usable
/// ([`latentcam_wire::valid_device_id`]: it ends up in log lines, metric
/// labels and file names) and the host can interpret the device's latents
/// with this manifest's heads: same protocol, same model id, an encoder
/// file the manifest lists (any precision or format of the model), the
/// model's latent dimension and a codec this build decodes.
pub fn check_hello(manifest: &Manifest, hello: &Hello<'_>) -> Result<(), Refusal> {
    if !latentcam_wire::valid_device_id(hello.device_id) {
        return refuse(
            WelcomeStatus::BadDeviceId,
            format!(
                "device id {:?} is unusable: it must be 1 to {} bytes without control characters",
                hello.device_id,
                latentcam_wire::MAX_ID_LEN
            ),
        );
    }
    if hello.protocol != u16::from(PROTOCOL_VERSION) {
        return refuse(
            WelcomeStatus::UnsupportedVersion,
            format!(
                "device speaks protocol {}, host speaks {PROTOCOL_VERSION}",
                hello.protocol
            ),
        );
    }
    // No silent downgrade: a device that asks for authentication is told
    // this host cannot give it, rather than streaming unauthenticated.
    if hello.auth.scheme != AuthScheme::None {
        return refuse(
            WelcomeStatus::AuthFailed,
            format!(
                "the device offers authentication scheme {:?}; this host implements none \
                 (see the README's security section)",
                hello.auth.scheme
            ),
        );
    }
    if hello.model.model_id != manifest.model_id {
        return refuse(
            WelcomeStatus::UnknownModel,
            format!(
                "device runs model {:?}, host knows {:?}",
                hello.model.model_id, manifest.model_id
            ),
        );
    }
    let sha = hex::encode(hello.model.encoder_sha256);
    let known = manifest
        .files
        .iter()
        .any(|f| f.role == "encoder" && f.sha256.eq_ignore_ascii_case(&sha));
    if !known {
        return refuse(
            WelcomeStatus::UnknownModel,
            format!(
                "encoder SHA-256 {sha} is not a file of model {:?} in the host's manifest",
                manifest.model_id
            ),
        );
    }
    if hello.model.latent_dim as usize != manifest.latent_dim {
        return refuse(
            WelcomeStatus::BadLatentDim,
            format!(
                "latent dimension {} differs from the model's {}",
                hello.model.latent_dim, manifest.latent_dim
            ),
        );
    }
    if let Codec::Unknown(id) = hello.codec {
        return refuse(
            WelcomeStatus::UnsupportedCodec,
            format!("latent codec {id} is unknown to this host"),
        );
    }
    Ok(())
}
