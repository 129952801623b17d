//! KServe v2 / Open Inference Protocol, with Triton's ModelConfig and ModelStatistics.

use crate::convert::InputSpec;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tonic::{Request, Response, Status};
use weft_core::Tensor;

use crate::ServeError;
use crate::batcher::JobResult;
use crate::convert::{kserve_datatype, split_bytes};
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::model_infer_response::InferOutputTensor;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::*;
use crate::server::{AppState, Model, deadline, request_id};

pub struct KServe {
    pub state: Arc<AppState>,
}

fn with_id<T>(mut r: Response<T>, rid: &str) -> Response<T> {
    if let Ok(v) = rid.parse() {
        r.metadata_mut().insert("request_id", v);
    }
    r
}

impl KServe {
    fn auth<T>(&self, req: &Request<T>, rid: &str) -> Result<(), Status> {
        self.state.keys.check(req.metadata()).map_err(|e| e.to_status(rid))
    }

    fn repository(&self, rid: &str) -> Result<&crate::repository::Repository, Status> {
        self.state.repository.as_ref().ok_or_else(|| {
            ServeError::InvalidArgument("this server has no model repository (--model-repository DIR)".into())
                .to_status(rid)
        })
    }
}

/// The element type the model declares for an output.
pub fn output_dtype(model: &Model, name: &str) -> weft_core::DType {
    model
        .package
        .graph
        .outputs
        .iter()
        .find(|o| o.name == name)
        .map_or(weft_core::DType::F32, |o| o.dtype)
}

/// Triton's ModelConfig type of an element type.
fn config_type(d: weft_core::DType) -> i32 {
    use weft_core::DType;
    (match d {
        DType::F32 => DataType::TypeFp32,
        DType::F16 => DataType::TypeFp16,
        DType::I8 => DataType::TypeInt8,
        DType::U8 => DataType::TypeUint8,
        DType::I32 => DataType::TypeInt32,
        DType::I64 => DataType::TypeInt64,
        DType::F64 => DataType::TypeFp64,
        DType::Bool => DataType::TypeBool,
        DType::I16 => DataType::TypeInt16,
        DType::U16 => DataType::TypeUint16,
        DType::U32 => DataType::TypeUint32,
        DType::U64 => DataType::TypeUint64,
        // not served (refused at load)
        _ => DataType::TypeInvalid,
    }) as i32
}

fn output_metadata(model: &Model) -> Vec<TensorMetadata> {
    model
        .package
        .graph
        .outputs
        .iter()
        .map(|o| TensorMetadata {
            name: o.name.clone(),
            datatype: kserve_datatype(o.dtype).into(),
            shape: o.shape.iter().map(|d| d.map_or(-1, |v| v as i64)).collect(),
        })
        .collect()
}

/// Output dims without the batch, from shape inference at batch 1.
fn output_dims(model: &Model) -> Vec<(String, Vec<i64>)> {
    let input_shapes = model
        .package
        .graph
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.concrete_shape(1)))
        .collect();
    let shapes = weft_core::shape::infer(&model.package.graph, &input_shapes).ok();
    model
        .package
        .graph
        .outputs
        .iter()
        .map(|o| {
            let dims = shapes
                .as_ref()
                .and_then(|s| s.shape(&o.name))
                .map(|s| s.iter().skip(1).map(|&d| d as i64).collect())
                .unwrap_or_default();
            (o.name.clone(), dims)
        })
        .collect()
}

async fn model_infer(
    state: &AppState,
    req: Request<ModelInferRequest>,
    rid: &str,
) -> Result<(String, ModelInferResponse, JobResult), (String, ServeError)> {
    let dl = deadline(req.metadata());
    let req = req.into_inner();
    state
        .check_size(prost::Message::encoded_len(&req))
        .map_err(|e| (req.model_name.clone(), e))?;
    let model = state
        .model(&req.model_name, &req.model_version)
        .map_err(|e| (req.model_name.clone(), e))?;
    let name = model.name.clone();
    let fail = |e: ServeError| (name.clone(), e);
    let model = &model;
    let decoding = Instant::now();
    // images are decoded on the blocking pool; tensors, a copy, right here
    let (input, req) = if req.inputs.iter().any(|i| i.datatype == "BYTES") {
        let m = model.clone();
        crate::convert::off_runtime(move || (decode_inputs(&m.inputs, &req), req))
            .await
            .map_err(fail)?
    } else {
        (decode_inputs(&model.inputs, &req), req)
    };
    let input = input.map_err(fail)?;
    let decoded = decoding.elapsed();
    let wanted: Vec<String> = if req.outputs.is_empty() {
        model.package.graph.outputs.iter().map(|o| o.name.clone()).collect()
    } else {
        req.outputs.iter().map(|o| o.name.clone()).collect()
    };
    for w in &wanted {
        if !model.package.graph.outputs.iter().any(|o| &o.name == w) {
            return Err(fail(ServeError::InvalidArgument(format!(
                "the model has no output '{w}'"
            ))));
        }
    }
    let mut result = state.infer(model, input, dl, rid).await.map_err(fail)?;
    let encoding = Instant::now();
    let mut resp = ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        id: req.id.clone(),
        ..Default::default()
    };
    for w in &wanted {
        let t = result
            .outputs
            .iter()
            .find(|(n, _)| n == w)
            .map(|(_, t)| t)
            .ok_or_else(|| fail(ServeError::Internal(format!("output {w} missing"))))?;
        // each output in the model's own element type
        let dtype = output_dtype(model, w);
        resp.outputs.push(InferOutputTensor {
            name: w.clone(),
            datatype: kserve_datatype(dtype).into(),
            shape: t.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        resp.raw_output_contents.push(crate::convert::le_bytes_as(t, dtype));
    }
    // the request's own share of the input and output work: decoding, encoding
    result.compute_input += decoded;
    result.compute_output += encoding.elapsed();
    Ok((name, resp, result))
}

/// One inference with its accounting (metrics, statistics, the request's log line) under
/// `protocol`: the gRPC service and the REST API both answer through this.
pub async fn infer_as(
    state: &AppState,
    req: Request<ModelInferRequest>,
    protocol: &'static str,
) -> Result<Response<ModelInferResponse>, Status> {
    let start = Instant::now();
    let _in_flight = state.metrics.start();
    let rid = request_id();
    if let Err(e) = state.keys.check(req.metadata()) {
        let name = req.get_ref().model_name.clone();
        state.finish(&rid, &name, protocol, e.code(), start, None);
        return Err(e.to_status(&rid));
    }
    match model_infer(state, req, &rid).await {
        Ok((name, resp, result)) => {
            state.finish(&rid, &name, protocol, tonic::Code::Ok, start, Some(&result));
            Ok(with_id(Response::new(resp), &rid))
        }
        Err((name, e)) => {
            state.finish(&rid, &name, protocol, e.code(), start, None);
            Err(e.to_status(&rid))
        }
    }
}

/// Decodes serialized ModelInferRequest bytes into the model's feeds exactly as the service
/// does (protobuf, then the input checks and conversions of `decode_inputs`); for fuzzing.
pub fn decode_infer_request(
    package: &weft_package::Package,
    bytes: &[u8],
    max_pixels: u64,
    max_batch: usize,
) -> Result<Vec<(String, Tensor)>, ServeError> {
    use prost::Message;
    let req = ModelInferRequest::decode(bytes)
        .map_err(|e| ServeError::InvalidArgument(format!("not a ModelInferRequest: {e}")))?;
    let specs = InputSpec::all(package, max_pixels, max_batch)?;
    decode_inputs(&specs, &req)
}

fn decode_inputs(specs: &[InputSpec], req: &ModelInferRequest) -> Result<Vec<(String, Tensor)>, ServeError> {
    let bad = |m: String| ServeError::InvalidArgument(m);
    if req.inputs.len() != specs.len() {
        return Err(bad(format!(
            "the model takes {} input{} ({}); the request has {}",
            specs.len(),
            if specs.len() == 1 { "" } else { "s" },
            crate::convert::names(specs),
            req.inputs.len()
        )));
    }
    if !req.raw_input_contents.is_empty() && req.raw_input_contents.len() != req.inputs.len() {
        return Err(bad(format!(
            "{} raw_input_contents for {} input{}",
            req.raw_input_contents.len(),
            req.inputs.len(),
            if req.inputs.len() == 1 { "" } else { "s" }
        )));
    }
    let mut given = Vec::with_capacity(specs.len());
    for (k, inp) in req.inputs.iter().enumerate() {
        // a single-input model takes its input under any name, as it always has
        let spec = match specs {
            [only] if inp.name.is_empty() || inp.name == only.name => only,
            [only] => {
                return Err(bad(format!(
                    "unknown input '{}' (the model's input is '{}')",
                    inp.name, only.name
                )));
            }
            _ => specs.iter().find(|s| s.name == inp.name).ok_or_else(|| {
                bad(format!(
                    "unknown input '{}' (the model's inputs are {})",
                    inp.name,
                    crate::convert::names(specs)
                ))
            })?,
        };
        let raw = req.raw_input_contents.get(k).map(Vec::as_slice);
        given.push((spec.name.clone(), decode_one(spec, inp, raw)?));
    }
    crate::convert::feeds(specs, given)
}

fn decode_one(
    spec: &InputSpec,
    inp: &model_infer_request::InferInputTensor,
    raw: Option<&[u8]>,
) -> Result<Tensor, ServeError> {
    let bad = |m: String| ServeError::InvalidArgument(m);
    let contents = inp.contents.as_ref();
    if raw.is_some() && contents.is_some_and(|c| c != &InferTensorContents::default()) {
        return Err(bad(format!(
            "input '{}' has both raw_input_contents and contents",
            spec.name
        )));
    }
    if inp.datatype == "BYTES" {
        let count = inp
            .shape
            .iter()
            .try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)))
            .ok_or_else(|| bad(format!("bad BYTES shape {:?}", inp.shape)))?;
        let images: Vec<&[u8]> = match raw {
            Some(r) => split_bytes(r, count)?,
            None => {
                let c = contents
                    .map(|c| &c.bytes_contents)
                    .ok_or_else(|| bad("BYTES input without data".into()))?;
                if c.len() != count {
                    return Err(bad(format!(
                        "BYTES tensor holds {} elements, its shape says {count}",
                        c.len()
                    )));
                }
                c.iter().map(Vec::as_slice).collect()
            }
        };
        return spec.decode_images(&images);
    }
    if inp.datatype.is_empty() {
        return Err(bad(format!("input '{}' has no datatype", spec.name)));
    }
    let bytes: Vec<u8> = match raw {
        Some(r) => r.to_vec(),
        None => {
            let c = contents.ok_or_else(|| bad(format!("input '{}' has no data", spec.name)))?;
            let narrow = |v: i64, lo: i64, hi: i64| {
                if (lo..=hi).contains(&v) {
                    Ok(v)
                } else {
                    Err(bad(format!("{} value {v} out of range", inp.datatype)))
                }
            };
            match inp.datatype.as_str() {
                "FP32" => c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
                "UINT8" => c
                    .uint_contents
                    .iter()
                    .map(|&v| narrow(v.into(), 0, 255).map(|v| v as u8))
                    .collect::<Result<_, _>>()?,
                "INT8" => c
                    .int_contents
                    .iter()
                    .map(|&v| narrow(v.into(), -128, 127).map(|v| v as u8))
                    .collect::<Result<_, _>>()?,
                "INT32" => c.int_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
                "INT64" => c.int64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
                "FP16" => {
                    return Err(bad("FP16 data must be sent as raw_input_contents".into()));
                }
                _ => Vec::new(), // refused by decode_raw with the datatypes the input takes
            }
        }
    };
    spec.decode_raw(&inp.datatype, &inp.shape, &bytes)
}

#[tonic::async_trait]
impl GrpcInferenceService for KServe {
    async fn server_live(&self, req: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        Ok(with_id(Response::new(ServerLiveResponse { live: true }), &rid))
    }

    async fn server_ready(&self, req: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let ready = self.state.all_ready();
        Ok(with_id(Response::new(ServerReadyResponse { ready }), &rid))
    }

    async fn model_ready(&self, req: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let r = req.into_inner();
        // a version not served (unloaded, refused, never loaded) is not ready; a model
        // name never served is NOT_FOUND
        let ready = match self.state.model(&r.name, &r.version) {
            Ok(m) => m.worker.is_ready() && self.state.ready.load(Ordering::SeqCst),
            Err(_) if !r.version.is_empty() && self.state.model(&r.name, "").is_ok() => false,
            Err(e) => return Err(e.to_status(&rid)),
        };
        Ok(with_id(Response::new(ModelReadyResponse { ready }), &rid))
    }

    async fn server_metadata(
        &self,
        req: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        Ok(with_id(
            Response::new(ServerMetadataResponse {
                name: "weft".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                // only what this server has: the repository extension with a repository
                extensions: ["model_configuration", "statistics", "binary_tensor_data"]
                    .into_iter()
                    .chain(self.state.repository.as_ref().map(|_| "model_repository"))
                    .map(String::from)
                    .collect(),
            }),
            &rid,
        ))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let r = req.into_inner();
        let m = self.state.model(&r.name, &r.version).map_err(|e| e.to_status(&rid))?;
        let versions = self
            .state
            .models()
            .iter()
            .filter(|v| v.name == m.name)
            .map(|v| v.version.clone())
            .collect();
        Ok(with_id(
            Response::new(ModelMetadataResponse {
                name: m.name.clone(),
                versions,
                platform: format!("weft_{}", m.package.precision),
                inputs: m
                    .inputs
                    .iter()
                    .map(|i| TensorMetadata {
                        name: i.name.clone(),
                        datatype: i.datatype().into(),
                        shape: std::iter::once(-1).chain(i.dims()).collect(),
                    })
                    .collect(),
                outputs: output_metadata(&m),
            }),
            &rid,
        ))
    }

    async fn model_infer(&self, req: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        infer_as(&self.state, req, "kserve").await
    }

    async fn model_config(&self, req: Request<ModelConfigRequest>) -> Result<Response<ModelConfigResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let r = req.into_inner();
        let m = self.state.model(&r.name, &r.version).map_err(|e| e.to_status(&rid))?;
        let mut parameters = std::collections::HashMap::new();
        if !m.package.labels.is_empty() {
            parameters.insert(
                "labels".to_string(),
                ModelParameter {
                    string_value: serde_json::to_string(&m.package.labels).unwrap_or_default(),
                },
            );
        }
        // the device that runs this version: never a surprise
        parameters.insert(
            "device".to_string(),
            ModelParameter {
                string_value: m.worker.description.clone(),
            },
        );
        parameters.insert(
            "precision".to_string(),
            ModelParameter {
                string_value: m.package.precision.to_string(),
            },
        );
        let config = ModelConfig {
            name: m.name.clone(),
            platform: format!("weft_{}", m.package.precision),
            backend: "weft".into(),
            max_batch_size: i32::try_from(m.policy.max_batch).unwrap_or(i32::MAX),
            input: m
                .inputs
                .iter()
                .map(|i| ModelInput {
                    name: i.name.clone(),
                    data_type: config_type(i.dtype),
                    dims: i.dims(),
                    ..Default::default()
                })
                .collect(),
            output: output_dims(&m)
                .into_iter()
                .map(|(name, dims)| ModelOutput {
                    data_type: config_type(output_dtype(&m, &name)),
                    name,
                    dims,
                    ..Default::default()
                })
                .collect(),
            scheduling_choice: Some(model_config::SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                max_queue_delay_microseconds: m.policy.max_delay.as_micros() as u64,
                default_queue_policy: Some(ModelQueuePolicy {
                    max_queue_size: u32::try_from(m.policy.queue_depth).unwrap_or(u32::MAX),
                }),
                ..Default::default()
            })),
            instance_group: vec![ModelInstanceGroup {
                name: m.name.clone(),
                count: i32::try_from(m.policy.instances).unwrap_or(i32::MAX),
                kind: model_instance_group::Kind::Model as i32,
                ..Default::default()
            }],
            parameters,
        };
        Ok(with_id(
            Response::new(ModelConfigResponse { config: Some(config) }),
            &rid,
        ))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let r = req.into_inner();
        let models: Vec<Arc<Model>> = if r.name.is_empty() {
            self.state.models()
        } else if r.version.is_empty() {
            // every version of the model
            let found = self.state.model(&r.name, "").map_err(|e| e.to_status(&rid))?;
            self.state
                .models()
                .into_iter()
                .filter(|m| m.name == found.name)
                .collect()
        } else {
            vec![self.state.model(&r.name, &r.version).map_err(|e| e.to_status(&rid))?]
        };
        let d = |(count, ns): (u64, u64)| Some(StatisticDuration { count, ns });
        let model_stats = models
            .into_iter()
            .map(|m| {
                let c = m.stats.lock().map(|c| c.clone()).unwrap_or_default();
                ModelStatistics {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    last_inference: c.last_inference_ms,
                    inference_count: c.inference_count,
                    execution_count: m.worker.executions.load(Ordering::Relaxed),
                    inference_stats: Some(InferStatistics {
                        success: d(c.success),
                        fail: d(c.fail),
                        queue: d(c.queue),
                        compute_input: d(c.compute_input),
                        compute_infer: d(c.compute_infer),
                        compute_output: d(c.compute_output),
                    }),
                    batch_stats: m
                        .worker
                        .batch_stats
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(size, b)| InferBatchStatistics {
                            batch_size: size,
                            compute_input: d((b.count, b.input_ns)),
                            compute_infer: d((b.count, b.infer_ns)),
                            compute_output: d((b.count, b.output_ns)),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(with_id(Response::new(ModelStatisticsResponse { model_stats }), &rid))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let repo = self.repository(&rid)?;
        let rows = repo
            .index(&self.state, req.get_ref().ready)
            .map_err(|e| e.to_status(&rid))?;
        let models = rows
            .into_iter()
            .map(|r| repository_index_response::ModelIndex {
                name: r.name,
                version: r.version,
                state: r.state,
                reason: r.reason,
            })
            .collect();
        Ok(with_id(Response::new(RepositoryIndexResponse { models }), &rid))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let repo = self.repository(&rid)?;
        let r = req.into_inner();
        let mut config = None;
        for (key, p) in &r.parameters {
            use model_repository_parameter::ParameterChoice;
            match (key.as_str(), &p.parameter_choice) {
                ("config", Some(ParameterChoice::StringParam(text))) => config = Some(text.as_str()),
                ("config", _) => {
                    return Err(
                        ServeError::InvalidArgument("the load parameter 'config' is a JSON string".into())
                            .to_status(&rid),
                    );
                }
                (k, _) if k.starts_with("file:") => {
                    return Err(ServeError::InvalidArgument(format!(
                        "a load request cannot carry model files ('{k}'): put the version directory in the repository"
                    ))
                    .to_status(&rid));
                }
                _ => {}
            }
        }
        repo.load(&self.state, &r.model_name, config)
            .await
            .map_err(|e| e.to_status(&rid))?;
        Ok(with_id(Response::new(RepositoryModelLoadResponse {}), &rid))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let rid = request_id();
        self.auth(&req, &rid)?;
        let repo = self.repository(&rid)?;
        repo.unload(&self.state, &req.get_ref().model_name)
            .await
            .map_err(|e| e.to_status(&rid))?;
        Ok(with_id(Response::new(RepositoryModelUnloadResponse {}), &rid))
    }
}
