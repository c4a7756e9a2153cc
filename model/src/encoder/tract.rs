//! The tract backend: ONNX, loaded and optimised once, run per frame.

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use super::{Backend, Encoder, EncoderError, EncoderInfo};

/// An ONNX encoder run by tract.
pub struct TractEncoder {
    info: EncoderInfo,
    model: std::sync::Arc<TypedRunnableModel>,
    shape: Vec<usize>,
    /// A private rayon pool when more than one thread was asked for. tract
    /// splits its matrix products (the 1×1 convolutions, most of the work)
    /// over it; depthwise convolutions stay on the calling thread.
    executor: Executor,
}

impl std::fmt::Debug for TractEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEncoder")
            .field("info", &self.info)
            .finish()
    }
}

impl TractEncoder {
    /// Loads and optimises the model at `info.path` for a fixed input shape,
    /// to run on `threads` threads (1: the calling thread only).
    pub fn load(info: EncoderInfo, shape: &[usize], threads: usize) -> Result<Self, EncoderError> {
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
        let executor = if threads > 1 {
            Executor::multithread_with_name(threads, "tract-encoder")
        } else {
            Executor::SingleThread
        };
        Ok(Self {
            info,
            model,
            shape: shape.to_vec(),
            executor,
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
        let outputs = multithread_tract_scope(self.executor.clone(), || {
            self.model.run(tvec!(tensor.into_tvalue()))
        })
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
