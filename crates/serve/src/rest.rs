//! KServe v2 over HTTP/REST (the Open Inference Protocol's REST binding) with Triton's binary
//! tensor extension, on the HTTP port beside `/metrics`, `/healthz` and `/readyz`.
//!
//! Every route answers through the gRPC service's own methods: a REST request becomes the
//! protobuf request (JSON tensor data and binary tensors become `raw_input_contents`), and the
//! protobuf response becomes JSON, with output tensors as JSON numbers or, where the client
//! asks, as binary data after the JSON header. So both protocols give the same bytes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tonic::{Code, Request, Status};

use crate::http::HttpState;
use crate::kserve::KServe;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::proto::inference::*;

/// The header giving the JSON part's length in a binary tensor request or response.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The HTTP status for a gRPC status code, as KServe and Triton map them.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn request_id_header(meta: &tonic::metadata::MetadataMap) -> Option<HeaderValue> {
    meta.get("request_id")
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

/// `{"error": ...}` with the status's HTTP code and its request id.
fn error(status: &Status) -> Response {
    let mut r = (
        http_status(status.code()),
        axum::Json(json!({"error": status.message()})),
    )
        .into_response();
    if let Some(v) = request_id_header(status.metadata()) {
        r.headers_mut().insert("request-id", v);
    }
    r
}

fn json_with_id(body: Value, meta: &tonic::metadata::MetadataMap) -> Response {
    let mut r = axum::Json(body).into_response();
    if let Some(v) = request_id_header(meta) {
        r.headers_mut().insert("request-id", v);
    }
    r
}

/// A gRPC request carrying the HTTP request's key.
fn grpc_request<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn service(state: &HttpState) -> Option<KServe> {
    state.app.read().ok().map(|a| KServe { state: a.clone() })
}

macro_rules! svc_or_503 {
    ($state:expr) => {
        match service(&$state) {
            Some(s) => s,
            None => return error(&Status::unavailable("the server is starting")),
        }
    };
}

/// Path parameters: a model and, optionally, its version.
#[derive(Deserialize)]
struct ModelPath {
    name: String,
    version: Option<String>,
}

async fn server_metadata(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    match svc
        .server_metadata(grpc_request(&headers, ServerMetadataRequest {}))
        .await
    {
        Ok(r) => {
            let m = r.get_ref();
            json_with_id(
                json!({"name": m.name, "version": m.version, "extensions": m.extensions}),
                r.metadata(),
            )
        }
        Err(s) => error(&s),
    }
}

/// 200 when true, 400 when false (Triton's convention for the health routes).
fn health(ok: bool) -> Response {
    if ok {
        StatusCode::OK.into_response()
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

async fn server_live(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    match svc.server_live(grpc_request(&headers, ServerLiveRequest {})).await {
        Ok(r) => health(r.get_ref().live),
        Err(s) => error(&s),
    }
}

async fn server_ready(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    match svc.server_ready(grpc_request(&headers, ServerReadyRequest {})).await {
        Ok(r) => health(r.get_ref().ready),
        Err(s) => error(&s),
    }
}

async fn model_ready(State(state): State<Arc<HttpState>>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    let req = ModelReadyRequest {
        name: p.name,
        version: p.version.unwrap_or_default(),
    };
    match svc.model_ready(grpc_request(&headers, req)).await {
        Ok(r) => health(r.get_ref().ready),
        Err(s) => error(&s),
    }
}

fn tensor_metadata(t: &[model_metadata_response::TensorMetadata]) -> Value {
    t.iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
        .collect()
}

async fn model_metadata(State(state): State<Arc<HttpState>>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    let req = ModelMetadataRequest {
        name: p.name,
        version: p.version.unwrap_or_default(),
    };
    match svc.model_metadata(grpc_request(&headers, req)).await {
        Ok(r) => {
            let m = r.get_ref();
            json_with_id(
                json!({
                    "name": m.name,
                    "versions": m.versions,
                    "platform": m.platform,
                    "inputs": tensor_metadata(&m.inputs),
                    "outputs": tensor_metadata(&m.outputs),
                }),
                r.metadata(),
            )
        }
        Err(s) => error(&s),
    }
}

fn data_type_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| "TYPE_INVALID".into())
}

/// Triton's JSON form of a ModelConfig (the protobuf JSON mapping with field names as in
/// the .proto, which `tritonclient.http`'s `get_model_config` returns).
fn config_json(c: &ModelConfig) -> Value {
    let tensors =
        |name: &str, dt: i32, dims: &[i64]| json!({"name": name, "data_type": data_type_name(dt), "dims": dims});
    let mut v = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| tensors(&i.name, i.data_type, &i.dims)).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| tensors(&o.name, o.data_type, &o.dims)).collect::<Vec<_>>(),
        "parameters": c.parameters.iter().map(|(k, p)| (k.clone(), json!({"string_value": p.string_value}))).collect::<Map<_, _>>(),
    });
    if let Some(model_config::SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        v["dynamic_batching"] = json!({"max_queue_delay_microseconds": d.max_queue_delay_microseconds});
    }
    v
}

async fn model_config(State(state): State<Arc<HttpState>>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    let svc = svc_or_503!(state);
    let req = ModelConfigRequest {
        name: p.name,
        version: p.version.unwrap_or_default(),
    };
    match svc.model_config(grpc_request(&headers, req)).await {
        Ok(r) => match &r.get_ref().config {
            Some(c) => json_with_id(config_json(c), r.metadata()),
            None => error(&Status::internal("no configuration")),
        },
        Err(s) => error(&s),
    }
}

fn duration(d: &Option<StatisticDuration>) -> Value {
    let d = d.unwrap_or_default();
    json!({"count": d.count, "ns": d.ns})
}

fn stats_json(s: &ModelStatisticsResponse) -> Value {
    let models: Vec<Value> = s
        .model_stats
        .iter()
        .map(|m| {
            let i = m.inference_stats.unwrap_or_default();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": duration(&i.success),
                    "fail": duration(&i.fail),
                    "queue": duration(&i.queue),
                    "compute_input": duration(&i.compute_input),
                    "compute_infer": duration(&i.compute_infer),
                    "compute_output": duration(&i.compute_output),
                },
                "batch_stats": m.batch_stats.iter().map(|b| json!({
                    "batch_size": b.batch_size,
                    "compute_input": duration(&b.compute_input),
                    "compute_infer": duration(&b.compute_infer),
                    "compute_output": duration(&b.compute_output),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"model_stats": models})
}

async fn statistics(state: &HttpState, headers: &HeaderMap, name: String, version: String) -> Response {
    let svc = svc_or_503!(state);
    match svc
        .model_statistics(grpc_request(headers, ModelStatisticsRequest { name, version }))
        .await
    {
        Ok(r) => json_with_id(stats_json(r.get_ref()), r.metadata()),
        Err(s) => error(&s),
    }
}

async fn model_stats(State(state): State<Arc<HttpState>>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    statistics(&state, &headers, p.name, p.version.unwrap_or_default()).await
}

async fn all_stats(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    statistics(&state, &headers, String::new(), String::new()).await
}

// ---------------------------------------------------------------- inference

#[derive(Deserialize)]
struct InferRequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

fn flag(p: &Option<Map<String, Value>>, key: &str) -> bool {
    p.as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The leaves of a (possibly nested) JSON array, in row-major order.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// JSON tensor data as the raw little-endian bytes the protobuf request carries.
fn json_to_raw(input: &InputJson, data: &Value) -> Result<Vec<u8>, String> {
    let mut leaves = Vec::new();
    flatten(data, &mut leaves);
    let name = &input.name;
    let number = |v: &Value| v.as_f64().ok_or_else(|| format!("input '{name}': {v} is not a number"));
    let integer = |v: &Value, lo: i64, hi: i64| {
        v.as_i64()
            .filter(|x| (lo..=hi).contains(x))
            .ok_or_else(|| format!("input '{name}': {v} is not a {} value", input.datatype))
    };
    let mut raw = Vec::new();
    for v in leaves {
        match input.datatype.as_str() {
            "FP32" => raw.extend_from_slice(&(number(v)? as f32).to_le_bytes()),
            "FP16" => raw.extend_from_slice(&half::f16::from_f64(number(v)?).to_le_bytes()),
            "UINT8" => raw.push(integer(v, 0, 255)? as u8),
            "INT8" => raw.extend_from_slice(&(integer(v, -128, 127)? as i8).to_le_bytes()),
            "INT32" => raw.extend_from_slice(&(integer(v, i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes()),
            "INT64" => raw.extend_from_slice(&integer(v, i64::MIN, i64::MAX)?.to_le_bytes()),
            "BYTES" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("input '{name}': BYTES elements are strings in JSON"))?;
                raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
            other => return Err(format!("input '{name}': datatype {other} cannot be sent as JSON data")),
        }
    }
    Ok(raw)
}

/// The parsed request: the protobuf message, and which outputs go back as binary data.
struct Parsed {
    request: ModelInferRequest,
    binary_outputs: HashMap<String, bool>,
    binary_default: bool,
}

/// The request body as sent (`Content-Encoding` gzip or deflate, as tritonclient's
/// `request_compression_algorithm` sends it) decompressed, at most `limit` bytes of it.
fn decompressed<'a>(headers: &HeaderMap, body: &'a [u8], limit: usize) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    use std::io::Read;
    let encoding = match headers.get(header::CONTENT_ENCODING).map(HeaderValue::to_str) {
        None => return Ok(body.into()),
        Some(Ok(e)) => e.trim().to_ascii_lowercase(),
        Some(Err(_)) => return Err("Content-Encoding is not text".into()),
    };
    let reader: Box<dyn Read + 'a> = match encoding.as_str() {
        "" | "identity" => return Ok(body.into()),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(body)),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body)),
        other => return Err(format!("Content-Encoding '{other}' is not supported (gzip, deflate)")),
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the {encoding} request body does not decompress: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "the {encoding} request body decompresses to more than the server's limit of {limit} bytes"
        ));
    }
    Ok(out.into())
}

/// A response body compressed as the client's `Accept-Encoding` asks (gzip or deflate, as
/// tritonclient's `response_compression_algorithm` asks), with the coding's name; as it is
/// otherwise.
fn compressed(headers: &HeaderMap, body: Vec<u8>) -> (Vec<u8>, Option<&'static str>) {
    use std::io::Write;
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // the first coding of the client's list weft has, unless refused with q=0
    let wanted = accept.split(',').find_map(|c| {
        let mut parts = c.split(';').map(str::trim);
        let name = parts.next()?;
        let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0));
        match name {
            "gzip" if !refused => Some("gzip"),
            "deflate" if !refused => Some("deflate"),
            _ => None,
        }
    });
    let out = match wanted {
        Some("gzip") => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).and_then(|_| e.finish())
        }
        Some(_) => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).and_then(|_| e.finish())
        }
        None => return (body, None),
    };
    match out {
        Ok(c) => (c, wanted),
        Err(_) => (body, None),
    }
}

fn parse_infer(name: String, version: String, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, String> {
    let (json_part, mut binary) = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| "Inference-Header-Content-Length is not a number".to_string())?;
            if n > body.len() {
                return Err(format!(
                    "Inference-Header-Content-Length {n} is longer than the body ({} bytes)",
                    body.len()
                ));
            }
            body.split_at(n)
        }
        None => (body, &[][..]),
    };
    let req: InferRequestJson =
        serde_json::from_slice(json_part).map_err(|e| format!("the request is not a valid inference request: {e}"))?;
    let mut request = ModelInferRequest {
        model_name: name,
        model_version: version,
        id: req.id.unwrap_or_default(),
        ..Default::default()
    };
    for input in &req.inputs {
        let size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let raw = match (size, &input.data) {
            (Some(size), None) => {
                let n = size
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("input '{}': binary_data_size is not a size", input.name))?;
                if n > binary.len() {
                    return Err(format!(
                        "input '{}': binary_data_size {n} is past the end of the body",
                        input.name
                    ));
                }
                let (this, rest) = binary.split_at(n);
                binary = rest;
                this.to_vec()
            }
            (None, Some(data)) => json_to_raw(input, data)?,
            (Some(_), Some(_)) => return Err(format!("input '{}' has both data and binary_data_size", input.name)),
            (None, None) => return Err(format!("input '{}' has no data", input.name)),
        };
        request.inputs.push(InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape: input.shape.clone(),
            ..Default::default()
        });
        request.raw_input_contents.push(raw);
    }
    if !binary.is_empty() {
        return Err(format!("{} bytes of binary data follow the inputs' data", binary.len()));
    }
    let mut binary_outputs = HashMap::new();
    for o in req.outputs.iter().flatten() {
        request.outputs.push(InferRequestedOutputTensor {
            name: o.name.clone(),
            ..Default::default()
        });
        binary_outputs.insert(o.name.clone(), flag(&o.parameters, "binary_data"));
    }
    Ok(Parsed {
        request,
        binary_outputs,
        binary_default: flag(&req.parameters, "binary_data_output"),
    })
}

/// Output tensor bytes as JSON numbers, by datatype.
fn raw_to_json(datatype: &str, raw: &[u8]) -> Value {
    match datatype {
        "FP32" => raw
            .chunks_exact(4)
            .map(|c| json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "FP16" => raw
            .chunks_exact(2)
            .map(|c| json!(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        "UINT8" => raw.iter().map(|&b| json!(b)).collect(),
        "INT8" => raw.iter().map(|&b| json!(b as i8)).collect(),
        "INT32" => raw
            .chunks_exact(4)
            .map(|c| json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "INT64" => raw
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        _ => Value::Null,
    }
}

async fn model_infer(
    State(state): State<Arc<HttpState>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let svc = svc_or_503!(state);
    let name = p.name.clone();
    let body = decompressed(&headers, &body, svc.state.max_message_bytes);
    let parsed = match body.and_then(|body| parse_infer(p.name, p.version.unwrap_or_default(), &headers, &body)) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Accounted and answered as the gRPC service answers a request it cannot decode
            // (a missing key still answers 401 first).
            let start = std::time::Instant::now();
            let rid = crate::server::request_id();
            let err = match svc.state.keys.check(grpc_request(&headers, ()).metadata()) {
                Ok(()) => crate::ServeError::InvalidArgument(e),
                Err(unauthenticated) => unauthenticated,
            };
            svc.state.finish(&rid, &name, "kserve-rest", err.code(), start, None);
            return error(&err.to_status(&rid));
        }
    };
    let response =
        match crate::kserve::infer_as(&svc.state, grpc_request(&headers, parsed.request), "kserve-rest").await {
            Ok(r) => r,
            Err(s) => return error(&s),
        };
    let meta = response.metadata().clone();
    let r = response.into_inner();
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for (o, raw) in r.outputs.iter().zip(&r.raw_output_contents) {
        let as_binary = parsed
            .binary_outputs
            .get(&o.name)
            .copied()
            .unwrap_or(parsed.binary_default);
        let mut out = json!({"name": o.name, "datatype": o.datatype, "shape": o.shape});
        if as_binary {
            out["parameters"] = json!({"binary_data_size": raw.len()});
            binary.extend_from_slice(raw);
        } else {
            out["data"] = raw_to_json(&o.datatype, raw);
        }
        outputs.push(out);
    }
    let mut doc = json!({"model_name": r.model_name, "model_version": r.model_version, "outputs": outputs});
    if !r.id.is_empty() {
        doc["id"] = json!(r.id);
    }
    let mut body = serde_json::to_vec(&doc).unwrap_or_default();
    let json_len = body.len();
    let content_type = if binary.is_empty() {
        "application/json"
    } else {
        body.extend_from_slice(&binary);
        "application/octet-stream"
    };
    let (body, coding) = compressed(&headers, body);
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if !binary.is_empty() {
        // the JSON part's length before compression, as the binary extension defines it
        resp.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    }
    if let Some(c) = coding {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
    }
    if let Some(v) = request_id_header(&meta) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

// ---------------------------------------------------------------- repository

#[derive(Deserialize, Default)]
struct IndexRequestJson {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(State(state): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let svc = svc_or_503!(state);
    let ready = if body.is_empty() {
        false
    } else {
        match serde_json::from_slice::<IndexRequestJson>(&body) {
            Ok(r) => r.ready,
            Err(e) => {
                return error(&Status::invalid_argument(format!(
                    "not a repository index request: {e}"
                )));
            }
        }
    };
    let req = RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    match svc.repository_index(grpc_request(&headers, req)).await {
        Ok(r) => {
            let rows: Vec<Value> = r
                .get_ref()
                .models
                .iter()
                .map(|m| {
                    let mut row = json!({"name": m.name, "version": m.version, "state": m.state});
                    if !m.reason.is_empty() {
                        row["reason"] = json!(m.reason);
                    }
                    row
                })
                .collect();
            json_with_id(Value::Array(rows), r.metadata())
        }
        Err(s) => error(&s),
    }
}

async fn repository_load(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let svc = svc_or_503!(state);
    use crate::proto::inference::model_repository_parameter::ParameterChoice;
    // an optional body: {"parameters": {"config": "<the model configuration as JSON>"}}
    let mut parameters = HashMap::new();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(&Status::invalid_argument(format!("not a model load request: {e}"))),
        };
        for (k, p) in v.get("parameters").and_then(Value::as_object).into_iter().flatten() {
            let choice = match p {
                Value::String(s) => ParameterChoice::StringParam(s.clone()),
                Value::Bool(b) => ParameterChoice::BoolParam(*b),
                Value::Number(n) if n.is_i64() => ParameterChoice::Int64Param(n.as_i64().unwrap_or_default()),
                other => ParameterChoice::StringParam(other.to_string()),
            };
            parameters.insert(
                k.clone(),
                ModelRepositoryParameter {
                    parameter_choice: Some(choice),
                },
            );
        }
    }
    let req = RepositoryModelLoadRequest {
        model_name: name,
        parameters,
        ..Default::default()
    };
    match svc.repository_model_load(grpc_request(&headers, req)).await {
        Ok(r) => json_with_id(json!({}), r.metadata()),
        Err(s) => error(&s),
    }
}

async fn repository_unload(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let svc = svc_or_503!(state);
    let req = RepositoryModelUnloadRequest {
        model_name: name,
        ..Default::default()
    };
    match svc.repository_model_unload(grpc_request(&headers, req)).await {
        Ok(r) => json_with_id(json!({}), r.metadata()),
        Err(s) => error(&s),
    }
}

/// The KServe v2 REST routes; request bodies up to `max_body` bytes (larger: 413).
pub fn routes(max_body: usize) -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(server_live))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/versions/{version}/config", get(model_config))
        .route("/v2/models/{name}/stats", get(model_stats))
        .route("/v2/models/{name}/versions/{version}/stats", get(model_stats))
        .route("/v2/models/{name}/infer", post(model_infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(model_infer))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route("/v2/repository/models/{name}/unload", post(repository_unload))
        .layer(DefaultBodyLimit::max(max_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap_or(HeaderValue::from_static("")));
        }
        h
    }

    #[test]
    fn json_data_becomes_raw_bytes() {
        let body = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[[1.5,-2]]}],
                        "outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let p = parse_infer("m".into(), "".into(), &HeaderMap::new(), body).unwrap_or_else(|e| panic!("{e}"));
        let mut want = 1.5f32.to_le_bytes().to_vec();
        want.extend_from_slice(&(-2.0f32).to_le_bytes());
        assert_eq!(p.request.raw_input_contents, vec![want]);
        assert_eq!(p.request.inputs[0].shape, vec![1, 2]);
        assert_eq!(p.binary_outputs.get("y"), Some(&true));
        assert!(!p.binary_default);
    }

    #[test]
    fn binary_tensors_follow_the_json_header() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"UINT8","parameters":{"binary_data_size":2}},
                                    {"name":"b","shape":[1],"datatype":"BYTES","data":["hi"]}],
                        "parameters":{"binary_data_output":true}}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[7, 9]);
        let h = headers(&[(HEADER_LENGTH, &json.len().to_string())]);
        let p = parse_infer("m".into(), "1".into(), &h, &body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.request.raw_input_contents[0], vec![7, 9]);
        assert_eq!(p.request.raw_input_contents[1], b"\x02\x00\x00\x00hi".to_vec());
        assert!(p.binary_default);
        // sizes that do not add up are errors, not panics
        for (len, extra) in [(json.len() + 100, 0usize), (json.len(), 5)] {
            let mut b = json.to_vec();
            b.extend(std::iter::repeat_n(0u8, extra));
            let h = headers(&[(HEADER_LENGTH, &len.to_string())]);
            assert!(parse_infer("m".into(), "".into(), &h, &b).is_err());
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        for body in [
            &br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#[..],
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BF16","data":[1]}]}"#,
            br#"not json"#,
            br#"{}"#,
        ] {
            assert!(parse_infer("m".into(), "".into(), &HeaderMap::new(), body).is_err());
        }
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn outputs_as_json_numbers() {
        let raw: Vec<u8> = [0.25f32, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(raw_to_json("FP32", &raw), json!([0.25, -1.0]));
        assert_eq!(raw_to_json("INT8", &[255]), json!([-1]));
    }

    #[test]
    fn codings_round_trip_and_bombs_stop_at_the_limit() {
        use std::io::Read;
        let body = b"{\"inputs\": []}".repeat(50);
        for (accept, coding) in [
            ("gzip", Some("gzip")),
            ("br, deflate;q=0.5", Some("deflate")),
            ("gzip;q=0, identity", None),
            ("", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
            let (out, got) = compressed(&h, body.clone());
            assert_eq!(got, coding, "{accept}");
            let mut back = Vec::new();
            let _ = match got {
                Some("gzip") => flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back),
                Some(_) => flate2::read::ZlibDecoder::new(&out[..]).read_to_end(&mut back),
                None => (&out[..]).read_to_end(&mut back),
            };
            assert_eq!(back, body);
            // and what the server decompresses is what was sent
            if let Some(c) = got {
                let mut h = HeaderMap::new();
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
                assert_eq!(decompressed(&h, &out, 1 << 20).map(|b| b.to_vec()), Ok(body.clone()));
                assert!(
                    decompressed(&h, &out, 100)
                        .unwrap_err()
                        .contains("more than the server's limit")
                );
                assert!(decompressed(&h, &out[..out.len() / 2], 1 << 20).is_err());
            }
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(
            decompressed(&h, b"x", 10)
                .unwrap_err()
                .contains("'br' is not supported")
        );
    }
}
