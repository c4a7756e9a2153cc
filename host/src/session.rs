//! What a host checks about a device before it interprets its latents.

use latentcam_firmware::manifest::Manifest;
use latentcam_wire::{AuthScheme, Codec, Hello, PROTOCOL_VERSION, WelcomeStatus};

use crate::auth::HostAuth;

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

fn refuse<T>(status: WelcomeStatus, reason: String) -> Result<T, Refusal> {
    Err(Refusal { status, reason })
}

/// What an acceptable `Hello` still needs before the device is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit {
    /// Nothing: the device is admitted now (no authentication).
    Now,
    /// The Noise handshake (wire/SPEC.md §7): the device's `Handshake`
    /// must follow, and the key it proves must be the one registered for
    /// its id.
    AfterHandshake,
}

/// [`check_hello_for`] on a host that authenticates nobody
/// ([`HostAuth::none`]): a device offering authentication is refused.
pub fn check_hello(manifest: &Manifest, hello: &Hello<'_>) -> Result<(), Refusal> {
    check_hello_for(manifest, hello, &HostAuth::none()).map(|_| ())
}

/// Accepts a `Hello` only if the device id is usable
/// ([`latentcam_wire::valid_device_id`]: it ends up in log lines, metric
/// labels and file names) and the host can interpret the device's latents
/// with this manifest's heads: same protocol, same model id, an encoder
/// file the manifest lists (any precision or format of the model), the
/// model's latent dimension and a codec this build decodes — and if its
/// authentication offer suits `auth`: scheme `None` is refused by a host
/// that requires authentication, schemes `NoiseIk` and `NoiseK` by a host
/// without a key (which of the two suits the link is the connection's
/// business),
/// and any other scheme always (never implemented; no downgrade).
pub fn check_hello_for(
    manifest: &Manifest,
    hello: &Hello<'_>,
    auth: &HostAuth,
) -> Result<Admit, Refusal> {
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
    let admit = match hello.auth.scheme {
        AuthScheme::None if auth.required() => {
            return refuse(
                WelcomeStatus::AuthRequired,
                "this host requires authenticated devices: provision this one \
                 (`latentcam-edge keygen`, then `latentcam-host keys add` on the host)"
                    .into(),
            );
        }
        AuthScheme::None => Admit::Now,
        AuthScheme::NoiseIk | AuthScheme::NoiseK if auth.key().is_none() => {
            return refuse(
                WelcomeStatus::AuthFailed,
                "this host has no key (serve --keys DIR)".into(),
            );
        }
        AuthScheme::NoiseIk | AuthScheme::NoiseK => Admit::AfterHandshake,
        other => {
            return refuse(
                WelcomeStatus::AuthFailed,
                format!(
                    "authentication scheme {other:?} is not implemented; use NoiseIk or NoiseK"
                ),
            );
        }
    };
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
    Ok(admit)
}
