//! The tract backend: ONNX, loaded and optimised once, run per frame.

use tract_onnx::prelude::*;

use super::{Backend, Encoder, EncoderError, EncoderInfo};

/// An ONNX encoder run by tract.
pub struct TractEncoder {
    info: EncoderInfo,
    model: std::sync::Arc<TypedRunnableModel>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for TractEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEncoder")
            .field("info", &self.info)
            .finish()
    }
}

impl TractEncoder {
    /// Loads and optimises the model at `info.path` for a fixed input shape.
    pub fn load(info: EncoderInfo, shape: &[usize]) -> Result<Self, EncoderError> {
        let load_err = |e: TractError| EncoderError::Load {
            backend: Backend::Tract,
            path: info.path.clone(),
            message: format!("{e:#}"),
        };
        let model = tract_onnx::onnx()
            .model_for_path(&info.path)
            .map_err(load_err)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(load_err)?
            .into_optimized()
            .map_err(load_err)?
            .into_runnable()
            .map_err(load_err)?;
        Ok(Self {
            info,
            model,
            shape: shape.to_vec(),
        })
    }
}

impl Encoder for TractEncoder {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn encode(&mut self, input: &[f32], latent: &mut [f32]) -> Result<(), EncoderError> {
        super::check_input(&self.info, input)?;
        let run_err = |e: TractError| EncoderError::Run {
            backend: Backend::Tract,
            message: format!("{e:#}"),
        };
        let tensor = Tensor::from_shape(&self.shape, input).map_err(run_err)?;
        let outputs = self
            .model
            .run(tvec!(tensor.into_tvalue()))
            .map_err(run_err)?;
        let view = outputs[0].try_as_plain_ram().map_err(run_err)?;
        let output = view.as_slice::<f32>().map_err(run_err)?;
        if output.len() != latent.len() {
            return Err(EncoderError::Shape {
                what: "encoder output",
                expected: latent.len(),
                got: output.len(),
            });
        }
        latent.copy_from_slice(output);
        Ok(())
    }
}
