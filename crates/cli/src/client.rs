//! `weft client`: a small KServe v2 client for demos and smoke tests: sends an image (or
//! a .npy tensor) to a running `weft serve` and prints the result.

use std::path::PathBuf;

use anyhow::{Context, bail};
use weft_serve::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use weft_serve::proto::inference::model_infer_request::InferInputTensor;
use weft_serve::proto::inference::{ModelConfigRequest, ModelInferRequest, ModelMetadataRequest, ServerReadyRequest};

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub url: String,
    /// Model name (default: the server's first model).
    #[arg(long, default_value = "")]
    pub model: String,
    /// An encoded image (JPEG or PNG) to send as BYTES.
    #[arg(long, conflicts_with = "input")]
    pub image: Option<PathBuf>,
    /// A .npy tensor (with the batch dimension), sent in the input's datatype; for a model
    /// with several inputs, `NAME=X.npy` once per input.
    #[arg(long, value_name = "[NAME=]X.npy")]
    pub input: Vec<String>,
    /// Output to print (default: the first).
    #[arg(long)]
    pub output_name: Option<String>,
    /// API key (sent as `authorization: Bearer KEY`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Give up after this many seconds when nothing listens at --url (connection refused,
    /// no route, no answer to the TCP handshake).
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    pub timeout: f64,
    /// Once a server answers at --url, wait up to this many seconds for it to be ready
    /// (a starting `weft serve` compiles its kernels first).
    #[arg(long, default_value_t = 60)]
    pub wait_s: u64,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e6 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// Waits until something accepts TCP connections at `url` (a server that has bound its
/// port but is still loading counts: it is then waited for by readiness), for at most
/// `timeout`: a closed port fails within seconds, not after the readiness wait.
async fn reach(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match tokio::time::timeout(left, tokio::net::TcpStream::connect(url)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        if tokio::time::Instant::now() + std::time::Duration::from_millis(200) >= deadline {
            bail!(
                "nothing answers at {url} after {:.0} s ({err}); is `weft serve` running there? \
                 (--url, --timeout)",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn client(args: &ClientArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

fn with_key<T>(mut req: tonic::Request<T>, key: &Option<String>) -> anyhow::Result<tonic::Request<T>> {
    if let Some(k) = key {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {k}")
                .parse()
                .context("the API key is not a valid header value")?,
        );
    }
    Ok(req)
}

async fn run(args: &ClientArgs) -> anyhow::Result<()> {
    reach(&args.url, std::time::Duration::from_secs_f64(args.timeout)).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait_s);
    let mut told = false;
    let mut c = loop {
        let attempt = async {
            let mut c = GrpcInferenceServiceClient::connect(format!("http://{}", args.url)).await?;
            let ready = c
                .server_ready(with_key(tonic::Request::new(ServerReadyRequest {}), &args.api_key)?)
                .await?
                .into_inner()
                .ready;
            anyhow::ensure!(ready, "the server is not ready yet");
            Ok::<_, anyhow::Error>(c)
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e.context(format!("waiting for {}", args.url)));
            }
            Err(e) => {
                if !told {
                    // never wait in silence
                    eprintln!(
                        "waiting up to {} s for {} to be ready (--wait-s): {}",
                        args.wait_s,
                        args.url,
                        e.root_cause()
                    );
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
        }
    };
    c = c.max_decoding_message_size(256 << 20);
    let meta = c
        .model_metadata(with_key(
            tonic::Request::new(ModelMetadataRequest {
                name: args.model.clone(),
                version: String::new(),
            }),
            &args.api_key,
        )?)
        .await?
        .into_inner();
    let config = c
        .model_config(with_key(
            tonic::Request::new(ModelConfigRequest {
                name: meta.name.clone(),
                version: String::new(),
            }),
            &args.api_key,
        )?)
        .await?
        .into_inner();
    let labels: Vec<String> = config
        .config
        .as_ref()
        .and_then(|c| c.parameters.get("labels"))
        .and_then(|p| serde_json::from_str(&p.string_value).ok())
        .unwrap_or_default();
    let first_input = meta.inputs.first().context("the model has no inputs")?;
    let mut inputs = Vec::new();
    let mut raws = Vec::new();
    match (&args.image, args.input.as_slice()) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut framed = (bytes.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            inputs.push(InferInputTensor {
                name: first_input.name.clone(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            });
            raws.push(framed);
        }
        (None, []) => bail!("give --image FILE or --input X.npy"),
        (None, given) => {
            for spec in given {
                let (name, path) = match spec.split_once('=') {
                    Some((n, p)) if meta.inputs.iter().any(|i| i.name == n) => (n.to_string(), p),
                    _ if meta.inputs.len() == 1 => (first_input.name.clone(), spec.as_str()),
                    _ => bail!(
                        "the model has several inputs ({}): give --input NAME=X.npy for each",
                        meta.inputs
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                let datatype = meta
                    .inputs
                    .iter()
                    .find(|i| i.name == name)
                    .map_or("FP32", |i| i.datatype.as_str());
                let dtype = dtype_of(datatype).unwrap_or(weft_core::DType::F32);
                let t = weft_core::npy::read(std::path::Path::new(path))?.cast(dtype);
                inputs.push(InferInputTensor {
                    name,
                    datatype: weft_serve::kserve_datatype(dtype).into(),
                    shape: t.shape().iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                });
                raws.push(t.to_le_bytes());
            }
        }
    }
    let req = ModelInferRequest {
        model_name: meta.name.clone(),
        inputs,
        raw_input_contents: raws,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let resp = c
        .model_infer(with_key(tonic::Request::new(req), &args.api_key)?)
        .await?;
    let elapsed = start.elapsed();
    let request_id = resp
        .metadata()
        .get("request_id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let resp = resp.into_inner();
    let idx = match &args.output_name {
        Some(n) => resp
            .outputs
            .iter()
            .position(|o| &o.name == n)
            .with_context(|| format!("no output '{n}' in the response"))?,
        None => 0,
    };
    let out = resp.outputs.get(idx).context("the response has no outputs")?;
    let raw = resp
        .raw_output_contents
        .get(idx)
        .context("the response has no output data")?;
    let dtype = dtype_of(&out.datatype).with_context(|| format!("output datatype {} is not shown", out.datatype))?;
    let shape: Vec<usize> = out.shape.iter().map(|&d| d.max(0) as usize).collect();
    let values: Vec<f32> = weft_core::Tensor::from_le_bytes(dtype, &shape, raw)?
        .to_f32()
        .iter()
        .copied()
        .collect();
    println!(
        "model {} output '{}' {:?} in {:.1} ms (request {request_id})",
        resp.model_name,
        out.name,
        out.shape,
        elapsed.as_secs_f64() * 1e3
    );
    let row = values.len() / out.shape.first().copied().unwrap_or(1).max(1) as usize;
    for (r, chunk) in values.chunks(row.max(1)).enumerate() {
        // Softmax for display when the output looks like class scores.
        let max = chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = chunk.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let mut order: Vec<usize> = (0..chunk.len()).collect();
        order.sort_by(|&a, &b| chunk[b].total_cmp(&chunk[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| {
                format!(
                    "{} {:.1}%",
                    labels.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
                    100.0 * exps[i] / sum
                )
            })
            .collect();
        println!("  row {r}: {}", top.join(", "));
    }
    Ok(())
}

/// The element type of a KServe datatype name.
fn dtype_of(datatype: &str) -> Option<weft_core::DType> {
    use weft_core::DType;
    [DType::F32, DType::F16, DType::I8, DType::U8, DType::I32, DType::I64]
        .into_iter()
        .find(|&d| weft_serve::kserve_datatype(d) == datatype)
}
