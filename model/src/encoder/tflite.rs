//! The TensorFlow Lite backend (cargo feature `tflite`), through `tflitec`.
//!
//! The model is a `.tflite` file with an NHWC input; the input and output
//! tensors are found by the names the manifest gives, not by position. The
//! XNNPACK delegate is optional ([`EncoderOptions::xnnpack`]). Without the
//! feature, [`TfliteEncoder`] still exists but cannot be built: loading it
//! answers [`EncoderError::NotCompiled`]. Building and deploying the native
//! library is described in `firmware/TFLITE.md`.
//!
//! [`EncoderOptions::xnnpack`]: super::EncoderOptions::xnnpack

#[cfg(feature = "tflite")]
pub use self::engine::TfliteEncoder;
#[cfg(not(feature = "tflite"))]
pub use self::stub::TfliteEncoder;

/// What the backends of `.tflite` files (`tflite`, `litert`) need from the
/// manifest and the options.
#[derive(Debug, Clone)]
pub struct TfliteConfig<'a> {
    /// Input tensor shape from the manifest (NHWC).
    pub input_shape: &'a [usize],
    /// Input tensor name from the manifest (`None`: the only input).
    pub input_name: Option<&'a str>,
    /// Name of the latent output tensor (first of the manifest's
    /// `output_names`; `None`: the only output).
    pub output_name: Option<&'a str>,
    /// Interpreter threads (LiteRT: XNNPACK threads).
    pub threads: usize,
    /// Whether to run through the XNNPACK delegate (LiteRT's CPU
    /// accelerator always does).
    pub xnnpack: bool,
}

#[cfg(feature = "tflite")]
mod engine {
    use tflitec::interpreter::{Interpreter, Options};
    use tflitec::model::Model;
    use tflitec::tensor::DataType;

    use super::TfliteConfig;
    use crate::encoder::{Backend, Encoder, EncoderError, EncoderInfo, find_tensor};

    /// A `.tflite` encoder run by the TensorFlow Lite C library.
    pub struct TfliteEncoder {
        info: EncoderInfo,
        input_index: usize,
        output_index: usize,
        xnnpack: bool,
        // Dropped after the interpreter (field order): the C API lets a model
        // go once the interpreter exists, but keeping it costs nothing.
        interpreter: Interpreter,
        _model: Model,
    }

    impl std::fmt::Debug for TfliteEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TfliteEncoder")
                .field("info", &self.info)
                .field("xnnpack", &self.xnnpack)
                .finish()
        }
    }

    fn run_err(e: impl std::fmt::Display) -> EncoderError {
        EncoderError::Run {
            backend: Backend::Tflite,
            message: e.to_string(),
        }
    }

    impl TfliteEncoder {
        /// Loads the model at `info.path` and prepares an interpreter for
        /// the manifest's input shape, checking that the named input and
        /// output tensors exist, are `f32`, and have the expected sizes.
        pub fn load(info: EncoderInfo, config: &TfliteConfig<'_>) -> Result<Self, EncoderError> {
            let load_err = |message: String| EncoderError::Load {
                backend: Backend::Tflite,
                path: info.path.clone(),
                message,
            };
            let path = info
                .path
                .to_str()
                .ok_or_else(|| load_err("the path is not valid UTF-8".into()))?;
            let model = Model::new(path).map_err(|e| load_err(e.to_string()))?;
            let options = Options {
                thread_count: i32::try_from(config.threads.max(1)).unwrap_or(i32::MAX),
                is_xnnpack_enabled: config.xnnpack,
            };
            let interpreter =
                Interpreter::new(&model, Some(options)).map_err(|e| load_err(e.to_string()))?;

            // Tensors have names (and data) only once allocated: allocate at
            // the file's own shapes, find the named tensors, then make the
            // input the manifest's shape if the file differs (a dynamic batch).
            interpreter
                .allocate_tensors()
                .map_err(|e| load_err(e.to_string()))?;
            let input_names = (0..interpreter.input_tensor_count())
                .map(|i| interpreter.input(i).map(|t| t.name().to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| load_err(e.to_string()))?;
            let names: Vec<&str> = input_names.iter().map(String::as_str).collect();
            let input_index = find_tensor("input", &names, config.input_name).map_err(load_err)?;
            let output_names = (0..interpreter.output_tensor_count())
                .map(|i| interpreter.output(i).map(|t| t.name().to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| load_err(e.to_string()))?;
            let names: Vec<&str> = output_names.iter().map(String::as_str).collect();
            let output_index =
                find_tensor("output", &names, config.output_name).map_err(load_err)?;
            let file_shape = interpreter
                .input(input_index)
                .map_err(|e| load_err(e.to_string()))?
                .shape()
                .dimensions()
                .clone();
            if file_shape.as_slice() != config.input_shape {
                interpreter
                    .resize_input(
                        input_index,
                        tflitec::tensor::Shape::new(config.input_shape.to_vec()),
                    )
                    .map_err(|e| load_err(e.to_string()))?;
                interpreter
                    .allocate_tensors()
                    .map_err(|e| load_err(e.to_string()))?;
            }

            let input = interpreter
                .input(input_index)
                .map_err(|e| load_err(e.to_string()))?;
            if input.data_type() != DataType::Float32 {
                return Err(load_err(format!(
                    "input {:?} is {:?}; this backend feeds f32 (quantize inside the model)",
                    input.name(),
                    input.data_type()
                )));
            }
            if input.shape().dimensions().as_slice() != config.input_shape {
                return Err(load_err(format!(
                    "input {:?} has shape {:?}, the manifest says {:?}",
                    input.name(),
                    input.shape().dimensions(),
                    config.input_shape
                )));
            }
            let output = interpreter
                .output(output_index)
                .map_err(|e| load_err(e.to_string()))?;
            let output_len: usize = output.shape().dimensions().iter().product();
            if output.data_type() != DataType::Float32 || output_len != info.latent_dim {
                return Err(load_err(format!(
                    "output {:?} is {:?} {:?}; the manifest expects f32 with {} values",
                    output.name(),
                    output.data_type(),
                    output.shape().dimensions(),
                    info.latent_dim
                )));
            }
            Ok(Self {
                info,
                input_index,
                output_index,
                xnnpack: config.xnnpack,
                interpreter,
                _model: model,
            })
        }

        /// Whether the XNNPACK delegate is in use.
        pub fn xnnpack(&self) -> bool {
            self.xnnpack
        }
    }

    impl Encoder for TfliteEncoder {
        fn info(&self) -> &EncoderInfo {
            &self.info
        }

        fn encode(&mut self, input: &[f32], latent: &mut [f32]) -> Result<(), EncoderError> {
            crate::encoder::check_input(&self.info, input)?;
            self.interpreter
                .copy(input, self.input_index)
                .map_err(run_err)?;
            self.interpreter.invoke().map_err(run_err)?;
            let output = self
                .interpreter
                .output(self.output_index)
                .map_err(run_err)?;
            let values = output.data::<f32>();
            if values.len() != latent.len() {
                return Err(EncoderError::Shape {
                    what: "encoder output",
                    expected: latent.len(),
                    got: values.len(),
                });
            }
            latent.copy_from_slice(values);
            Ok(())
        }
    }
}

#[cfg(not(feature = "tflite"))]
mod stub {
    use super::TfliteConfig;
    use crate::encoder::{Backend, Encoder, EncoderError, EncoderInfo};

    /// The TensorFlow Lite encoder. This build has no TFLite support (cargo
    /// feature `tflite`): [`TfliteEncoder::load`] always fails with
    /// [`EncoderError::NotCompiled`], and no value of this type can exist.
    #[derive(Debug)]
    pub struct TfliteEncoder {
        never: std::convert::Infallible,
    }

    impl TfliteEncoder {
        /// Fails: this build has no TFLite support.
        pub fn load(_info: EncoderInfo, _config: &TfliteConfig<'_>) -> Result<Self, EncoderError> {
            Err(EncoderError::NotCompiled {
                backend: Backend::Tflite,
                feature: "tflite",
            })
        }

        /// Whether the XNNPACK delegate is in use (never: no value exists).
        pub fn xnnpack(&self) -> bool {
            match self.never {}
        }
    }

    impl Encoder for TfliteEncoder {
        fn info(&self) -> &EncoderInfo {
            match self.never {}
        }

        fn encode(&mut self, _input: &[f32], _latent: &mut [f32]) -> Result<(), EncoderError> {
            match self.never {}
        }
    }
}
