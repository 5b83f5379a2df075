//! The codec on ONNX Runtime: the whole-utterance decoder, the stateful step decoder that
//! streams and one-shot decodes go through (`codec_decode_step.onnx`, its state carried per
//! stream), and the encoder; sessions that only some calls need open at their first use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorRef};
use parking_lot::Mutex;

use super::codec_err;
use super::device::Float;
use crate::backend::{Codec, CodecStep};
use crate::bundle::{BundleInfo, StepStateTensor};
use crate::codes::{Codes, Frames};
use crate::error::{Error, Result};

/// The codec sessions of `info` (None when the bundle has no `codec_decode` graph): the
/// stateful decoder `codec_decode_step` opened now by `open(role, path)` when the bundle has it
/// and `with_step` is set, the whole-utterance decoder now too, or by `open_decoder` when it is
/// first used if that is given and the step graph is there; the encoder by `open_encoder` when
/// it is first used.
pub(super) fn open_codec(
    info: &BundleInfo,
    name: &'static str,
    float: Float,
    with_step: bool,
    mut open: impl FnMut(&str, &Path) -> Result<Session>,
    open_encoder: SessionOpener,
    open_decoder: Option<SessionOpener>,
) -> Result<Option<OnnxCodec>> {
    let Some(p) = info.graphs.get("codec_decode") else {
        return Ok(None);
    };
    let encode = info.graphs.get("codec_encode").map(|p| LazySession::new(p, open_encoder));
    let step = match info.graphs.get("codec_decode_step") {
        Some(p) if with_step => {
            let session = open("codec_decode_step", p)?;
            check_step_io(&session, &info.codec.step_state)?;
            Some(Arc::new(StepShared {
                name,
                float,
                session: Mutex::new(session),
                state: info.codec.step_state.clone(),
                frame_samples: info.codec.frame_samples,
            }))
        }
        _ => None,
    };
    let decode = match open_decoder {
        Some(opener) if step.is_some() => LazySession::new(p, opener),
        _ => LazySession::opened(p, open("codec_decode", p)?),
    };
    Ok(Some(OnnxCodec {
        name,
        float,
        decode,
        encode,
        start_frame: std::sync::OnceLock::new(),
        step,
        info: info.clone(),
    }))
}

/// Opens one graph's session (owned, so it can run later, on any thread).
pub(super) type SessionOpener = Box<dyn Fn(&Path) -> Result<Session> + Send + Sync>;

/// A session opened when it is first used. The codec encoder is one: only voice creation needs
/// it, and at the real shapes ONNX Runtime's optimisation of its graph is seconds of every load.
pub(super) struct LazySession {
    path: PathBuf,
    open: SessionOpener,
    session: Mutex<Option<Session>>,
}

impl LazySession {
    fn new(path: &Path, open: SessionOpener) -> Self {
        Self { path: path.to_path_buf(), open, session: Mutex::new(None) }
    }

    /// A session opened already (it is never closed, so `open` is never called).
    fn opened(path: &Path, session: Session) -> Self {
        let open: SessionOpener =
            Box::new(|p| Err(Error::Internal(format!("{} was opened at load", p.display()))));
        Self { path: path.to_path_buf(), open, session: Mutex::new(Some(session)) }
    }

    /// The session, opened now if this is its first use (an error is returned, not kept: the
    /// next call tries again).
    fn lock(&self) -> Result<parking_lot::MappedMutexGuard<'_, Session>> {
        let mut guard = self.session.lock();
        if guard.is_none() {
            *guard = Some((self.open)(&self.path)?);
        }
        parking_lot::MutexGuard::try_map(guard, Option::as_mut)
            .map_err(|_| Error::Internal(format!("{} session vanished", self.path.display())))
    }
}

/// The step graph has `codes`, `start_frame` and every `codec.step_state` input, and `pcm` and
/// every state output.
fn check_step_io(session: &Session, state: &[StepStateTensor]) -> Result<()> {
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    let want_in =
        ["codes", "start_frame"].into_iter().chain(state.iter().map(|t| t.input.as_str()));
    let want_out = std::iter::once("pcm").chain(state.iter().map(|t| t.output.as_str()));
    for (kind, want, have) in
        [("input", want_in.collect::<Vec<_>>(), &inputs), ("output", want_out.collect(), &outputs)]
    {
        if let Some(missing) = want.iter().find(|n| !have.contains(n)) {
            return Err(Error::bundle(
                "codec_decode_step.onnx",
                "codec.step_state",
                format!("the graph has no {kind} `{missing}`; re-export the bundle"),
            ));
        }
    }
    Ok(())
}

/// The codec on ONNX Runtime.
pub(super) struct OnnxCodec {
    /// Backend name for errors (`onnx-cpu`, `onnx-cuda`, `tensorrt`).
    name: &'static str,
    /// Float type of the codec's PCM input/output.
    float: Float,
    /// The whole-utterance decoder: opened at load, or on first use where one-shot decodes go
    /// through the step graph (onnx-cpu).
    decode: LazySession,
    /// Opened on first use (voice creation only).
    encode: Option<LazySession>,
    /// Whether `codec_decode.onnx` has the `start_frame` input (known once it is open).
    start_frame: std::sync::OnceLock<bool>,
    /// The stateful decoder (`codec_decode_step.onnx`), when the bundle has one.
    step: Option<Arc<StepShared>>,
    info: BundleInfo,
}

/// The step graph's session, shared by every stream (each holds its own state).
struct StepShared {
    name: &'static str,
    float: Float,
    session: Mutex<Session>,
    state: Vec<StepStateTensor>,
    frame_samples: usize,
}

/// One stream's decode through `codec_decode_step.onnx`: the state tensors as the last call
/// returned them (all zeros at first), kept as ONNX Runtime values and fed back as they are.
struct OnnxCodecStep {
    shared: Arc<StepShared>,
    state: Vec<DynValue>,
    position: usize,
}

impl OnnxCodecStep {
    fn new(shared: Arc<StepShared>) -> Result<Self> {
        let err = codec_err(shared.name, "codec_decode_step");
        let state = shared
            .state
            .iter()
            .map(|t| {
                let n: usize = t.shape.iter().product();
                match shared.float {
                    Float::F32 => Tensor::<f32>::from_array((t.shape.clone(), vec![0.0f32; n]))
                        .map(|v| v.into_dyn()),
                    Float::F16 => {
                        Tensor::<half::f16>::from_array((t.shape.clone(), vec![half::f16::ZERO; n]))
                            .map(|v| v.into_dyn())
                    }
                }
            })
            .collect::<ort::Result<Vec<DynValue>>>()
            .map_err(err)?;
        Ok(Self { shared, state, position: 0 })
    }
}

impl CodecStep for OnnxCodecStep {
    fn decode_next(&mut self, codes: &Codes, pcm: &mut Vec<f32>) -> Result<()> {
        let sh = &self.shared;
        let (k, t) = (codes.num_codebooks(), codes.frames().0);
        if t == 0 {
            return Ok(());
        }
        let err = || codec_err(sh.name, "codec_decode_step");
        // codes [1, K, T] i64, start_frame [1] i64, past.* -> pcm [1, 1, T * frame_samples], present.*
        let start = [self.position as i64];
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(2 + self.state.len());
        inputs.push((
            "codes".into(),
            TensorRef::from_array_view(([1usize, k, t], codes.as_slice())).map_err(err())?.into(),
        ));
        inputs.push((
            "start_frame".into(),
            TensorRef::from_array_view(([1usize], &start[..])).map_err(err())?.into(),
        ));
        for (spec, v) in sh.state.iter().zip(&self.state) {
            inputs.push((spec.input.as_str().into(), v.into()));
        }
        let mut session = sh.session.lock();
        let mut out = session.run(inputs).map_err(err())?;
        let missing = |name: &str| Error::Backend {
            backend: sh.name,
            op: "codec_decode_step".into(),
            message: format!("graph has no output `{name}`"),
        };
        let data = super::device::floats(
            out.get("pcm").ok_or_else(|| missing("pcm"))?,
            sh.name,
            "codec_decode_step",
        )?;
        if data.len() != t * sh.frame_samples {
            return Err(Error::Backend {
                backend: sh.name,
                op: "codec_decode_step".into(),
                message: format!("{} samples for {t} frames of {}", data.len(), sh.frame_samples),
            });
        }
        let state = sh
            .state
            .iter()
            .map(|spec| out.remove(&spec.output).ok_or_else(|| missing(&spec.output)))
            .collect::<Result<Vec<DynValue>>>()?;
        pcm.extend_from_slice(&data);
        self.state = state;
        self.position += t;
        Ok(())
    }

    fn position(&self) -> usize {
        self.position
    }
}

impl OnnxCodec {
    /// Whether `codec_decode.onnx` has the optional `start_frame` input (an overridable
    /// initializer, default 0, of newer exports); opens the decoder if it is not open yet.
    fn has_start_frame(&self) -> Result<bool> {
        if let Some(&known) = self.start_frame.get() {
            return Ok(known);
        }
        let session = self.decode.lock()?;
        let has = session.inputs().iter().any(|i| i.name() == "start_frame");
        Ok(*self.start_frame.get_or_init(|| has))
    }
}

impl Codec for OnnxCodec {
    fn name(&self) -> &'static str {
        self.name
    }

    fn supports_start_frame(&self) -> bool {
        // A decoder that cannot be opened has no start frame; decode_at then reports why.
        self.has_start_frame().unwrap_or(false)
    }

    fn decode_at(&self, codes: &Codes, start_frame: usize, pcm: &mut Vec<f32>) -> Result<()> {
        let k = codes.num_codebooks();
        let t = codes.frames().0;
        if t == 0 {
            return Ok(());
        }
        let has_start_frame = self.has_start_frame()?;
        if start_frame > 0 && !has_start_frame {
            return Err(Error::Internal("codec_decode has no start_frame input".into()));
        }
        // codes [1, K, T] i64 (+ start_frame [1] i64) -> pcm [1, 1, T * frame_samples] f32
        let input = TensorRef::from_array_view(([1usize, k, t], codes.as_slice()))
            .map_err(codec_err(self.name, "codec_decode"))?;
        let start = [start_frame as i64];
        let mut session = self.decode.lock()?;
        let out = if has_start_frame {
            let start = TensorRef::from_array_view(([1usize], &start[..]))
                .map_err(codec_err(self.name, "codec_decode"))?;
            session.run(ort::inputs!["codes" => input, "start_frame" => start])
        } else {
            session.run(ort::inputs!["codes" => input])
        }
        .map_err(codec_err(self.name, "codec_decode"))?;
        let v = out.get("pcm").ok_or_else(|| Error::Backend {
            backend: self.name,
            op: "codec_decode".into(),
            message: "graph has no output `pcm`".into(),
        })?;
        let data = super::device::floats(v, self.name, "codec_decode")?;
        if data.len() != t * self.info.codec.frame_samples {
            return Err(Error::Backend {
                backend: self.name,
                op: "codec_decode".into(),
                message: format!(
                    "{} samples for {t} frames of {}",
                    data.len(),
                    self.info.codec.frame_samples
                ),
            });
        }
        pcm.extend_from_slice(&data);
        Ok(())
    }

    fn start_step(&self) -> Result<Option<Box<dyn CodecStep>>> {
        match &self.step {
            Some(shared) => Ok(Some(Box::new(OnnxCodecStep::new(shared.clone())?))),
            None => Ok(None),
        }
    }

    fn encode(&self, pcm: &[f32]) -> Result<Codes> {
        let session = self.encode.as_ref().ok_or_else(|| {
            Error::bundle(
                "manifest.json",
                "graphs.codec_encode",
                "this bundle has no codec encoder",
            )
        })?;
        if pcm.is_empty() {
            return Err(Error::arg("pcm", "no samples"));
        }
        // pcm [1, 1, S] f32 -> codes [1, K, T] i64
        let mut session = session.lock()?;
        let out = match self.float {
            Float::F32 => {
                let input = TensorRef::from_array_view(([1usize, 1, pcm.len()], pcm))
                    .map_err(codec_err(self.name, "codec_encode"))?;
                session.run(ort::inputs!["pcm" => input])
            }
            Float::F16 => {
                let half: Vec<half::f16> = pcm.iter().map(|&x| half::f16::from_f32(x)).collect();
                let input = Tensor::<half::f16>::from_array(([1usize, 1, pcm.len()], half))
                    .map_err(codec_err(self.name, "codec_encode"))?;
                session.run(ort::inputs!["pcm" => input])
            }
        }
        .map_err(codec_err(self.name, "codec_encode"))?;
        let v = out.get("codes").ok_or_else(|| Error::Backend {
            backend: self.name,
            op: "codec_encode".into(),
            message: "graph has no output `codes`".into(),
        })?;
        let (shape, data) =
            v.try_extract_tensor::<i64>().map_err(codec_err(self.name, "codec_encode"))?;
        let dims: &[i64] = shape;
        if dims.len() != 3 || dims[1] as usize != self.info.model.num_codebooks {
            return Err(Error::Backend {
                backend: self.name,
                op: "codec_encode".into(),
                message: format!("codes shape {dims:?}"),
            });
        }
        Codes::new(dims[1] as usize, Frames(dims[2] as usize), data.to_vec())
    }
}
