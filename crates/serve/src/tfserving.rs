//! TensorFlow Serving's PredictionService as Azure's Brainwave client speaks it: Predict
//! without a model_spec, one DT_STRING image under any input key, outputs keyed by output
//! tensor name; GetModelMetadata returns a SignatureDefMap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tonic::{Request, Response, Status};
use weft_core::{DType, Tensor};

use crate::ServeError;
use crate::batcher::JobResult;
use crate::convert::InputSpec;
use crate::proto::tensorflow::serving::prediction_service_server::PredictionService;
use crate::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelMetadataResponse, ModelSpec, PredictRequest, PredictResponse, SignatureDefMap,
};
use crate::proto::tensorflow::{
    DataType, SignatureDef, TensorInfo, TensorProto, TensorShapeProto, tensor_info, tensor_shape_proto,
};
use crate::server::{AppState, Model, deadline, request_id};

pub struct TfServing {
    pub state: Arc<AppState>,
}

fn bad(m: impl Into<String>) -> ServeError {
    ServeError::InvalidArgument(m.into())
}

fn shape_of(t: &TensorProto) -> Result<Vec<i64>, ServeError> {
    match &t.tensor_shape {
        Some(s) if s.unknown_rank => Err(bad("tensor has unknown rank")),
        Some(s) => Ok(s.dim.iter().map(|d| d.size).collect()),
        None => Err(bad("tensor has no shape")),
    }
}

fn decode(spec: &InputSpec, t: &TensorProto) -> Result<Tensor, ServeError> {
    let content = |values: Vec<u8>| {
        if t.tensor_content.is_empty() {
            values
        } else {
            t.tensor_content.clone()
        }
    };
    match DataType::try_from(t.dtype).unwrap_or(DataType::DtInvalid) {
        DataType::DtString => {
            let count = shape_of(t).ok().map(|s| s.iter().product::<i64>());
            if count.is_some_and(|c| c != t.string_val.len() as i64) && !(t.string_val.len() == 1 && count == Some(1)) {
                return Err(bad(format!(
                    "string tensor holds {} elements, its shape says {}",
                    t.string_val.len(),
                    count.unwrap_or(0)
                )));
            }
            let images: Vec<&[u8]> = t.string_val.iter().map(Vec::as_slice).collect();
            spec.decode_images(&images)
        }
        DataType::DtFloat => {
            let shape = shape_of(t)?;
            let bytes: Vec<u8> = if !t.tensor_content.is_empty() {
                t.tensor_content.clone()
            } else {
                t.float_val.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            spec.decode_raw("FP32", &shape, &bytes)
        }
        DataType::DtHalf => {
            let shape = shape_of(t)?;
            let bytes: Vec<u8> = if !t.tensor_content.is_empty() {
                t.tensor_content.clone()
            } else {
                t.half_val.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect()
            };
            spec.decode_raw("FP16", &shape, &bytes)
        }
        DataType::DtUint8 => {
            let shape = shape_of(t)?;
            let bytes: Vec<u8> = if !t.tensor_content.is_empty() {
                t.tensor_content.clone()
            } else {
                t.int_val
                    .iter()
                    .map(|&v| u8::try_from(v).map_err(|_| bad(format!("uint8 value {v} out of range"))))
                    .collect::<Result<_, _>>()?
            };
            spec.decode_raw("UINT8", &shape, &bytes)
        }
        DataType::DtInt8 => {
            let values = t
                .int_val
                .iter()
                .map(|&v| {
                    i8::try_from(v)
                        .map(|v| v as u8)
                        .map_err(|_| bad(format!("int8 value {v} out of range")))
                })
                .collect::<Result<_, _>>()?;
            spec.decode_raw("INT8", &shape_of(t)?, &content(values))
        }
        DataType::DtInt32 => {
            let values = t.int_val.iter().flat_map(|v| v.to_le_bytes()).collect();
            spec.decode_raw("INT32", &shape_of(t)?, &content(values))
        }
        DataType::DtInt64 => {
            let values = t.int64_val.iter().flat_map(|v| v.to_le_bytes()).collect();
            spec.decode_raw("INT64", &shape_of(t)?, &content(values))
        }
        other => Err(bad(format!(
            "dtype {} is not accepted (DT_STRING images, DT_FLOAT, DT_HALF, DT_UINT8, DT_INT8, DT_INT32, DT_INT64)",
            other.as_str_name()
        ))),
    }
}

/// TensorFlow's type of an element type.
fn tf_dtype(d: DType) -> DataType {
    match d {
        DType::F32 => DataType::DtFloat,
        DType::F16 => DataType::DtHalf,
        DType::I8 => DataType::DtInt8,
        DType::U8 => DataType::DtUint8,
        DType::I32 => DataType::DtInt32,
        DType::I64 => DataType::DtInt64,
        DType::F64 => DataType::DtDouble,
        DType::Bool => DataType::DtBool,
        DType::I16 => DataType::DtInt16,
        DType::U16 => DataType::DtUint16,
        DType::U32 => DataType::DtUint32,
        DType::U64 => DataType::DtUint64,
        DType::BF16 => DataType::DtBfloat16,
        // not served (refused at load)
        _ => DataType::DtInvalid,
    }
}

/// An output in the model's own element type, as `tensor_content`.
fn output_tensor(t: &Tensor, dtype: DType) -> TensorProto {
    TensorProto {
        dtype: tf_dtype(dtype) as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: t
                .shape()
                .iter()
                .map(|&d| tensor_shape_proto::Dim {
                    size: d as i64,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        tensor_content: crate::convert::le_bytes_as(t, dtype),
        ..Default::default()
    }
}

fn spec_name(m: &Model) -> ModelSpec {
    ModelSpec {
        name: m.name.clone(),
        version_choice: None,
        signature_name: "serving_default".into(),
    }
}

async fn predict(
    state: &AppState,
    req: Request<PredictRequest>,
    rid: &str,
) -> Result<(String, PredictResponse, JobResult), (String, ServeError)> {
    let dl = deadline(req.metadata());
    let req = req.into_inner();
    state.check_size(req.encoded_len()).map_err(|e| (String::new(), e))?;
    let (name, version) = match &req.model_spec {
        Some(s) => (
            s.name.clone(),
            match &s.version_choice {
                Some(crate::proto::tensorflow::serving::model_spec::VersionChoice::Version(v)) => v.to_string(),
                _ => String::new(),
            },
        ),
        None => (String::new(), String::new()),
    };
    let model = state.model(&name, &version).map_err(|e| (name.clone(), e))?;
    let model = &model;
    let mname = model.name.clone();
    let fail = |e: ServeError| (mname.clone(), e);
    if req.inputs.is_empty() {
        return Err(fail(bad("the request has no inputs")));
    }
    // A single-input model takes its tensor under any key (the Brainwave client names it
    // after the graph's placeholder); a model with several takes each under its own name.
    let tensors: Vec<(&InputSpec, &TensorProto)> = match (model.inputs.as_slice(), req.inputs.len()) {
        ([only], 1) => vec![(only, req.inputs.values().next().ok_or_else(|| fail(bad("no input")))?)],
        ([only], _) => vec![(
            only,
            req.inputs
                .get(&only.name)
                .ok_or_else(|| fail(bad(format!("the model takes one input, '{}'", only.name))))?,
        )],
        (specs, _) => {
            if let Some(k) = req.inputs.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
                return Err(fail(bad(format!(
                    "unknown input '{k}' (the model's inputs are {})",
                    crate::convert::names(specs)
                ))));
            }
            specs
                .iter()
                .map(|s| {
                    req.inputs
                        .get(&s.name)
                        .map(|t| (s, t))
                        .ok_or_else(|| fail(bad(format!("input '{}' is missing", s.name))))
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut given = Vec::with_capacity(tensors.len());
    for (spec, tensor) in tensors {
        // images are decoded on the blocking pool; tensors, a copy, right here
        let t = if tensor.dtype == DataType::DtString as i32 {
            let (s, t) = (spec.clone(), tensor.clone());
            crate::convert::off_runtime(move || decode(&s, &t))
                .await
                .map_err(fail)?
        } else {
            decode(spec, tensor)
        }
        .map_err(fail)?;
        given.push((spec.name.clone(), t));
    }
    let input = crate::convert::feeds(&model.inputs, given).map_err(fail)?;
    let outputs: Vec<String> = model.package.graph.outputs.iter().map(|o| o.name.clone()).collect();
    for f in &req.output_filter {
        if !outputs.contains(f) && f != "output_alias" {
            return Err(fail(bad(format!(
                "the model has no output '{f}' (outputs: {})",
                outputs.join(", ")
            ))));
        }
    }
    let result = state.infer(model, input, dl, rid).await.map_err(fail)?;
    let mut map = HashMap::new();
    for (n, t) in &result.outputs {
        if req.output_filter.is_empty() || req.output_filter.contains(n) {
            map.insert(n.clone(), output_tensor(t, crate::kserve::output_dtype(model, n)));
        }
    }
    // Older Brainwave clients read the first output as "output_alias".
    if (req.output_filter.is_empty() || req.output_filter.iter().any(|f| f == "output_alias"))
        && let Some((n, t)) = result.outputs.first()
    {
        map.insert(
            "output_alias".into(),
            output_tensor(t, crate::kserve::output_dtype(model, n)),
        );
    }
    Ok((
        mname,
        PredictResponse {
            model_spec: Some(spec_name(model)),
            outputs: map,
        },
        result,
    ))
}

#[tonic::async_trait]
impl PredictionService for TfServing {
    async fn predict(&self, req: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let start = Instant::now();
        let _in_flight = self.state.metrics.start();
        let rid = request_id();
        let result = match self.state.keys.check(req.metadata()) {
            Err(e) => Err((
                req.get_ref()
                    .model_spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                e,
            )),
            Ok(()) => predict(&self.state, req, &rid).await,
        };
        match result {
            Ok((name, resp, result)) => {
                self.state
                    .finish(&rid, &name, "tfserving", tonic::Code::Ok, start, Some(&result));
                let mut r = Response::new(resp);
                if let Ok(v) = rid.parse() {
                    r.metadata_mut().insert("request_id", v);
                }
                Ok(r)
            }
            Err((name, e)) => {
                self.state.finish(&rid, &name, "tfserving", e.code(), start, None);
                Err(e.to_status(&rid))
            }
        }
    }

    async fn get_model_metadata(
        &self,
        req: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let rid = request_id();
        self.state.keys.check(req.metadata()).map_err(|e| e.to_status(&rid))?;
        let r = req.into_inner();
        if r.metadata_field.iter().any(|f| f != "signature_def") {
            return Err(bad("only the 'signature_def' metadata field is available").to_status(&rid));
        }
        let name = r.model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let m = self.state.model(&name, "").map_err(|e| e.to_status(&rid))?;
        let info = |name: &str, dtype: DType, dims: Vec<i64>| TensorInfo {
            encoding: Some(tensor_info::Encoding::Name(format!("{name}:0"))),
            dtype: tf_dtype(dtype) as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: dims
                    .into_iter()
                    .map(|d| tensor_shape_proto::Dim {
                        size: d,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
        };
        let outputs = m
            .package
            .graph
            .outputs
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    info(
                        &o.name,
                        o.dtype,
                        o.shape.iter().map(|d| d.map_or(-1, |v| v as i64)).collect(),
                    ),
                )
            })
            .collect();
        let sig = SignatureDef {
            inputs: m
                .inputs
                .iter()
                .map(|i| {
                    let dims = std::iter::once(-1).chain(i.dims()).collect();
                    (i.name.clone(), info(&i.name, i.dtype, dims))
                })
                .collect(),
            outputs,
            method_name: "tensorflow/serving/predict".into(),
        };
        let map = SignatureDefMap {
            signature_def: HashMap::from([("serving_default".to_string(), sig)]),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: map.encode_to_vec(),
        };
        let resp = GetModelMetadataResponse {
            model_spec: Some(spec_name(&m)),
            metadata: HashMap::from([("signature_def".to_string(), any)]),
        };
        let mut r = Response::new(resp);
        if let Ok(v) = rid.parse() {
            r.metadata_mut().insert("request_id", v);
        }
        Ok(r)
    }
}
