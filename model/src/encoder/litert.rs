//! The LiteRT backend (cargo feature `litert`): Google's LiteRT 2.x runtime
//! through its C API (`litert-sys`), compiled for the CPU accelerator, which
//! runs float and int8 graphs on XNNPACK.
//!
//! It loads the same `.tflite` files as the `tflite` backend. The native
//! library is not built from source: `scripts/fetch-litert.sh` takes the
//! pinned, self-contained `libLiteRt.so` out of the `ai-edge-litert` wheel
//! (x86_64 and aarch64) and prints its directory, which the build reads
//! from `LITERT_LIB_DIR` and the program finds at run time (rpath or
//! `LD_LIBRARY_PATH`). Without the feature, [`LitertEncoder`] still exists
//! but cannot be built: loading it answers [`EncoderError::NotCompiled`].
//!
//! The raw C API is used rather than the `litert` crate because the crate
//! has no way to pass CPU options, and `[model] threads` must reach
//! XNNPACK: LiteRT 2.1 takes them as opaque options named `xnnpack` whose
//! payload is a TOML fragment (`num_threads = N`), the format its own
//! `LrtGetOpaqueCpuOptionsData` produces (that helper is not exported by
//! the shared library).

#[cfg(feature = "litert")]
pub use self::engine::LitertEncoder;
#[cfg(not(feature = "litert"))]
pub use self::stub::LitertEncoder;

#[cfg(feature = "litert")]
mod engine {
    use std::ffi::{CStr, CString, c_char, c_void};
    use std::ptr;

    use litert_sys as sys;

    use crate::encoder::{Backend, Encoder, EncoderError, EncoderInfo, TfliteConfig, find_tensor};

    /// `Err` naming a failed call and its status. (The library of the
    /// wheel does not export `LiteRtGetStatusString`; the common statuses
    /// are named here from the C header.)
    fn check(code: sys::LiteRtStatus, call: &str) -> Result<(), String> {
        let name = match code {
            sys::kLiteRtStatusOk => return Ok(()),
            sys::kLiteRtStatusErrorInvalidArgument => "invalid argument",
            sys::kLiteRtStatusErrorMemoryAllocationFailure => "memory allocation failure",
            sys::kLiteRtStatusErrorRuntimeFailure => "runtime failure",
            sys::kLiteRtStatusErrorMissingInputTensor => "missing input tensor",
            sys::kLiteRtStatusErrorUnsupported => "unsupported",
            sys::kLiteRtStatusErrorNotFound => "not found",
            sys::kLiteRtStatusErrorWrongVersion => "wrong version",
            sys::kLiteRtStatusErrorFileIO => "file I/O error",
            sys::kLiteRtStatusErrorInvalidFlatbuffer => "not a valid .tflite flatbuffer",
            sys::kLiteRtStatusErrorDynamicLoading => "dynamic loading failed",
            sys::kLiteRtStatusErrorCompilation => "compilation failed",
            _ => "error",
        };
        Err(format!("{call} failed: {name} (LiteRtStatus {code})"))
    }

    /// A string the runtime owns, copied (empty when null).
    ///
    /// # Safety
    /// `text` is null or a NUL-terminated string alive for this call.
    unsafe fn owned(text: *const c_char) -> String {
        if text.is_null() {
            String::new()
        } else {
            // SAFETY: per this function's contract.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        }
    }

    unsafe extern "C" fn free_payload(payload: *mut c_void) {
        // SAFETY: the payload was allocated by `libc::strdup` below.
        unsafe { libc::free(payload) }
    }

    /// Every handle the encoder owns; each is destroyed once, in the
    /// reverse order of creation, whatever step of loading failed.
    struct Handles {
        env: sys::LiteRtEnvironment,
        model: sys::LiteRtModel,
        options: sys::LiteRtOptions,
        compiled: sys::LiteRtCompiledModel,
        inputs: Vec<sys::LiteRtTensorBuffer>,
        outputs: Vec<sys::LiteRtTensorBuffer>,
    }

    impl Drop for Handles {
        fn drop(&mut self) {
            // SAFETY: each pointer is null or a live handle this struct
            // owns alone; the buffers and the compiled model go before the
            // model and the environment they were made from.
            unsafe {
                for buffer in self.inputs.drain(..).chain(self.outputs.drain(..)) {
                    sys::LiteRtDestroyTensorBuffer(buffer);
                }
                if !self.compiled.is_null() {
                    sys::LiteRtDestroyCompiledModel(self.compiled);
                }
                if !self.options.is_null() {
                    sys::LiteRtDestroyOptions(self.options);
                }
                if !self.model.is_null() {
                    sys::LiteRtDestroyModel(self.model);
                }
                if !self.env.is_null() {
                    sys::LiteRtDestroyEnvironment(self.env);
                }
            }
        }
    }

    /// A `.tflite` encoder compiled by LiteRT for the CPU.
    pub struct LitertEncoder {
        info: EncoderInfo,
        threads: usize,
        output_index: usize,
        handles: Handles,
    }

    // SAFETY: the handles belong to this value alone and are only used
    // through `&mut self`, one call at a time; LiteRT objects are not tied
    // to the thread that created them.
    unsafe impl Send for LitertEncoder {}

    impl std::fmt::Debug for LitertEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LitertEncoder")
                .field("info", &self.info)
                .field("threads", &self.threads)
                .finish()
        }
    }

    /// A tensor of the model's signature: its name and type.
    struct Tensor {
        name: String,
        ty: sys::LiteRtRankedTensorType,
    }

    impl Tensor {
        fn dims(&self) -> Vec<usize> {
            let layout = &self.ty.layout;
            let rank = (layout.rank() as usize).min(layout.dimensions.len());
            layout.dimensions[..rank]
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect()
        }
    }

    /// The tensors of signature 0's inputs (or outputs).
    fn tensors(signature: sys::LiteRtSignature, inputs: bool) -> Result<Vec<Tensor>, String> {
        let mut count: sys::LiteRtParamIndex = 0;
        // SAFETY: `signature` is a live handle of a live model; every out
        // pointer is valid for the call.
        unsafe {
            if inputs {
                check(
                    sys::LiteRtGetNumSignatureInputs(signature, &mut count),
                    "LiteRtGetNumSignatureInputs",
                )?;
            } else {
                check(
                    sys::LiteRtGetNumSignatureOutputs(signature, &mut count),
                    "LiteRtGetNumSignatureOutputs",
                )?;
            }
            (0..count)
                .map(|i| {
                    let mut tensor: sys::LiteRtTensor = ptr::null_mut();
                    if inputs {
                        check(
                            sys::LiteRtGetSignatureInputTensorByIndex(signature, i, &mut tensor),
                            "LiteRtGetSignatureInputTensorByIndex",
                        )?;
                    } else {
                        check(
                            sys::LiteRtGetSignatureOutputTensorByIndex(signature, i, &mut tensor),
                            "LiteRtGetSignatureOutputTensorByIndex",
                        )?;
                    }
                    let mut name: *const c_char = ptr::null();
                    check(
                        sys::LiteRtGetTensorName(tensor, &mut name),
                        "LiteRtGetTensorName",
                    )?;
                    let mut ty = sys::LiteRtRankedTensorType::default();
                    check(
                        sys::LiteRtGetRankedTensorType(tensor, &mut ty),
                        "LiteRtGetRankedTensorType",
                    )?;
                    Ok(Tensor {
                        name: owned(name),
                        ty,
                    })
                })
                .collect()
        }
    }

    /// Index of the tensor called `wanted` (or the only one).
    fn find(what: &str, tensors: &[Tensor], wanted: Option<&str>) -> Result<usize, String> {
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        find_tensor(what, &names, wanted)
    }

    /// A host-memory buffer for `tensor`.
    fn buffer(
        env: sys::LiteRtEnvironment,
        tensor: &Tensor,
    ) -> Result<sys::LiteRtTensorBuffer, String> {
        let bytes = tensor.dims().iter().product::<usize>() * std::mem::size_of::<f32>();
        let mut buffer: sys::LiteRtTensorBuffer = ptr::null_mut();
        // SAFETY: `env` is live, the type is a copy the runtime gave, and
        // the out pointer is valid.
        check(
            unsafe {
                sys::LiteRtCreateManagedTensorBuffer(
                    env,
                    sys::kLiteRtTensorBufferTypeHostMemory,
                    &tensor.ty,
                    bytes,
                    &mut buffer,
                )
            },
            "LiteRtCreateManagedTensorBuffer",
        )?;
        Ok(buffer)
    }

    impl LitertEncoder {
        /// Loads the model at `info.path`, compiles it for the CPU with
        /// `config.threads` XNNPACK threads, and checks that the named input
        /// and output exist, are `f32`, and have the manifest's sizes.
        pub fn load(info: EncoderInfo, config: &TfliteConfig<'_>) -> Result<Self, EncoderError> {
            let load_err = |message: String| EncoderError::Load {
                backend: Backend::Litert,
                path: info.path.clone(),
                message,
            };
            let path = info
                .path
                .to_str()
                .and_then(|p| CString::new(p).ok())
                .ok_or_else(|| load_err("the path is not valid UTF-8 without NUL".into()))?;
            let threads = config.threads.max(1);
            let mut h = Handles {
                env: ptr::null_mut(),
                model: ptr::null_mut(),
                options: ptr::null_mut(),
                compiled: ptr::null_mut(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            };
            // SAFETY: every call gets live handles created just before (or
            // null where the API allows it) and valid out pointers; what is
            // created is owned by `h` at once, so an early return frees it.
            let (input_index, output_index) = unsafe {
                check(
                    sys::LiteRtCreateEnvironment(0, ptr::null(), &mut h.env),
                    "LiteRtCreateEnvironment",
                )
                .map_err(load_err)?;
                check(
                    sys::LiteRtCreateModelFromFile(path.as_ptr(), &mut h.model),
                    "LiteRtCreateModelFromFile",
                )
                .map_err(load_err)?;
                let mut signature: sys::LiteRtSignature = ptr::null_mut();
                check(
                    sys::LiteRtGetModelSignature(h.model, 0, &mut signature),
                    "LiteRtGetModelSignature",
                )
                .map_err(load_err)?;
                let inputs = tensors(signature, true).map_err(load_err)?;
                let outputs = tensors(signature, false).map_err(load_err)?;
                let input_index = find("input", &inputs, config.input_name).map_err(load_err)?;
                let output_index =
                    find("output", &outputs, config.output_name).map_err(load_err)?;
                let input = &inputs[input_index];
                if input.ty.element_type != sys::kLiteRtElementTypeFloat32 {
                    return Err(load_err(format!(
                        "input {:?} is not f32; this backend feeds f32 (quantize inside the model)",
                        input.name
                    )));
                }
                if input.dims() != config.input_shape {
                    return Err(load_err(format!(
                        "input {:?} has shape {:?}, the manifest says {:?}",
                        input.name,
                        input.dims(),
                        config.input_shape
                    )));
                }
                let output = &outputs[output_index];
                let output_len: usize = output.dims().iter().product();
                if output.ty.element_type != sys::kLiteRtElementTypeFloat32
                    || output_len != info.latent_dim
                {
                    return Err(load_err(format!(
                        "output {:?} has shape {:?} (f32: {}); the manifest expects f32 with {} values",
                        output.name,
                        output.dims(),
                        output.ty.element_type == sys::kLiteRtElementTypeFloat32,
                        info.latent_dim
                    )));
                }

                check(
                    sys::LiteRtCreateOptions(&mut h.options),
                    "LiteRtCreateOptions",
                )
                .map_err(load_err)?;
                check(
                    sys::LiteRtSetOptionsHardwareAccelerators(
                        h.options,
                        sys::kLiteRtHwAcceleratorCpu as sys::LiteRtHwAcceleratorSet,
                    ),
                    "LiteRtSetOptionsHardwareAccelerators",
                )
                .map_err(load_err)?;
                let toml =
                    CString::new(format!("num_threads = {threads}\n")).expect("no NUL in a number");
                let payload = libc::strdup(toml.as_ptr()).cast::<c_void>();
                if payload.is_null() {
                    return Err(load_err("out of memory for the CPU options".into()));
                }
                let mut cpu: sys::LiteRtOpaqueOptions = ptr::null_mut();
                if let Err(e) = check(
                    sys::LiteRtCreateOpaqueOptions(
                        c"xnnpack".as_ptr(),
                        payload,
                        Some(free_payload),
                        &mut cpu,
                    ),
                    "LiteRtCreateOpaqueOptions",
                ) {
                    libc::free(payload);
                    return Err(load_err(e));
                }
                // The options own the CPU options from here on.
                if let Err(e) = check(
                    sys::LiteRtAddOpaqueOptions(h.options, cpu),
                    "LiteRtAddOpaqueOptions",
                ) {
                    sys::LiteRtDestroyOpaqueOptions(cpu);
                    return Err(load_err(e));
                }
                check(
                    sys::LiteRtCreateCompiledModel(h.env, h.model, h.options, &mut h.compiled),
                    "LiteRtCreateCompiledModel",
                )
                .map_err(load_err)?;
                for tensor in &inputs {
                    h.inputs.push(buffer(h.env, tensor).map_err(load_err)?);
                }
                for tensor in &outputs {
                    h.outputs.push(buffer(h.env, tensor).map_err(load_err)?);
                }
                (input_index, output_index)
            };
            // One input is fed; a model with others would read garbage.
            if h.inputs.len() != 1 || input_index != 0 {
                return Err(load_err(format!(
                    "the model has {} inputs; this backend feeds exactly one",
                    h.inputs.len()
                )));
            }
            Ok(Self {
                info,
                threads,
                output_index,
                handles: h,
            })
        }

        /// XNNPACK threads asked for.
        pub fn threads(&self) -> usize {
            self.threads
        }
    }

    /// Runs `access` on the host memory of `buffer`, locked in `mode`,
    /// after checking that the buffer holds at least `len` f32 values.
    ///
    /// # Safety
    /// `buffer` is a live host-memory tensor buffer of f32 values, and
    /// `access` touches at most `len` values from the pointer it is given.
    unsafe fn with_locked(
        buffer: sys::LiteRtTensorBuffer,
        len: usize,
        mode: sys::LiteRtTensorBufferLockMode,
        access: impl FnOnce(*mut f32),
    ) -> Result<(), String> {
        let needed = len * std::mem::size_of::<f32>();
        let mut size = 0usize;
        // SAFETY: per this function's contract; the lock gives host memory
        // of `size` bytes until the unlock.
        unsafe {
            check(
                sys::LiteRtGetTensorBufferSize(buffer, &mut size),
                "LiteRtGetTensorBufferSize",
            )?;
            if size < needed {
                return Err(format!("tensor buffer holds {size} bytes, {needed} needed"));
            }
            let mut address: *mut c_void = ptr::null_mut();
            check(
                sys::LiteRtLockTensorBuffer(buffer, &mut address, mode),
                "LiteRtLockTensorBuffer",
            )?;
            if address.is_null() {
                let _ = sys::LiteRtUnlockTensorBuffer(buffer);
                return Err("a locked tensor buffer has no host address".into());
            }
            access(address.cast::<f32>());
            check(
                sys::LiteRtUnlockTensorBuffer(buffer),
                "LiteRtUnlockTensorBuffer",
            )
        }
    }

    /// Copies `values` into `buffer`, with no staging copy.
    ///
    /// # Safety
    /// As for [`with_locked`].
    unsafe fn write_tensor(buffer: sys::LiteRtTensorBuffer, values: &[f32]) -> Result<(), String> {
        // SAFETY: the closure writes exactly `values.len()` values, which
        // `with_locked` checked the buffer holds.
        unsafe {
            with_locked(
                buffer,
                values.len(),
                sys::kLiteRtTensorBufferLockModeWrite,
                |memory| ptr::copy_nonoverlapping(values.as_ptr(), memory, values.len()),
            )
        }
    }

    /// Copies the first `values.len()` values of `buffer` into `values`.
    ///
    /// # Safety
    /// As for [`with_locked`].
    unsafe fn read_tensor(
        buffer: sys::LiteRtTensorBuffer,
        values: &mut [f32],
    ) -> Result<(), String> {
        let len = values.len();
        let out = values.as_mut_ptr();
        // SAFETY: the closure reads exactly `len` values, which
        // `with_locked` checked the buffer holds.
        unsafe {
            with_locked(
                buffer,
                len,
                sys::kLiteRtTensorBufferLockModeRead,
                |memory| ptr::copy_nonoverlapping(memory, out, len),
            )
        }
    }

    impl Encoder for LitertEncoder {
        fn info(&self) -> &EncoderInfo {
            &self.info
        }

        fn encode(&mut self, input: &[f32], latent: &mut [f32]) -> Result<(), EncoderError> {
            crate::encoder::check_input(&self.info, input)?;
            if latent.len() != self.info.latent_dim {
                return Err(EncoderError::Shape {
                    what: "encoder output",
                    expected: self.info.latent_dim,
                    got: latent.len(),
                });
            }
            let run_err = |message: String| EncoderError::Run {
                backend: Backend::Litert,
                message,
            };
            let h = &mut self.handles;
            // SAFETY: the buffers and the compiled model are live and were
            // made for this model's signature 0; the arrays hold every
            // input and output buffer.
            unsafe {
                write_tensor(h.inputs[0], input).map_err(run_err)?;
                check(
                    sys::LiteRtRunCompiledModel(
                        h.compiled,
                        0,
                        h.inputs.len(),
                        h.inputs.as_mut_ptr(),
                        h.outputs.len(),
                        h.outputs.as_mut_ptr(),
                    ),
                    "LiteRtRunCompiledModel",
                )
                .map_err(run_err)?;
                read_tensor(h.outputs[self.output_index], latent).map_err(run_err)?;
            }
            Ok(())
        }
    }
}

#[cfg(not(feature = "litert"))]
mod stub {
    use crate::encoder::{Backend, Encoder, EncoderError, EncoderInfo, TfliteConfig};

    /// The LiteRT encoder. This build has no LiteRT support (cargo feature
    /// `litert`): [`LitertEncoder::load`] always fails with
    /// [`EncoderError::NotCompiled`], and no value of this type can exist.
    #[derive(Debug)]
    pub struct LitertEncoder {
        never: std::convert::Infallible,
    }

    impl LitertEncoder {
        /// Fails: this build has no LiteRT support.
        pub fn load(_info: EncoderInfo, _config: &TfliteConfig<'_>) -> Result<Self, EncoderError> {
            Err(EncoderError::NotCompiled {
                backend: Backend::Litert,
                feature: "litert",
            })
        }

        /// XNNPACK threads asked for (never: no value exists).
        pub fn threads(&self) -> usize {
            match self.never {}
        }
    }

    impl Encoder for LitertEncoder {
        fn info(&self) -> &EncoderInfo {
            match self.never {}
        }

        fn encode(&mut self, _input: &[f32], _latent: &mut [f32]) -> Result<(), EncoderError> {
            match self.never {}
        }
    }
}
