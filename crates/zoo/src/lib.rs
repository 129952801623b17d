//! The model zoo: ResNet v1.5 (torchvision layout and tensor names) and CIFAR-style
//! ResNets, with seeded He-initialised weights.
//!
//! BatchNorm statistics are set from the activations of a seeded probe batch while the
//! network is built (each BatchNorm sees its real input), so activations stay in a sane
//! range at every depth instead of vanishing or exploding as with default statistics.

use weft_core::op::{Conv, Gemm, Padding, Pool};
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};

/// Names `weft zoo` accepts.
pub const MODELS: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet8",
    "resnet20",
];

/// Name of the features output (the pooled, flattened layer before the classifier).
pub const FEATURES: &str = "features";
/// Name of the classifier output.
pub const LOGITS: &str = "logits";
/// Name of the image input.
pub const INPUT: &str = "input";

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("unknown model '{0}' (known: {list})", list = MODELS.join(", "))]
    Unknown(String),
    #[error("building the model failed: {0}")]
    Build(#[from] weft_core::CoreError),
}

/// Options for building a zoo model.
#[derive(Clone, Debug, Default)]
pub struct ZooOptions {
    pub seed: u64,
    /// Fixed batch size, or `None` for a symbolic batch dimension.
    pub batch: Option<usize>,
    pub num_classes: Option<usize>,
}

/// Builds a zoo model by name.
pub fn build(name: &str, opts: &ZooOptions) -> Result<Graph, ZooError> {
    let (blocks, bottleneck, cifar) = match name {
        "resnet18" => (vec![2, 2, 2, 2], false, false),
        "resnet34" => (vec![3, 4, 6, 3], false, false),
        "resnet50" => (vec![3, 4, 6, 3], true, false),
        "resnet101" => (vec![3, 4, 23, 3], true, false),
        "resnet152" => (vec![3, 8, 36, 3], true, false),
        "resnet8" => (vec![1, 1, 1], false, true),
        "resnet20" => (vec![3, 3, 3], false, true),
        other => return Err(ZooError::Unknown(other.to_string())),
    };
    let (size, probe_size, classes) = if cifar { (32, 32, 10) } else { (224, 64, 1000) };
    let classes = opts.num_classes.unwrap_or(classes);
    let mut b = Builder::new(opts.seed, probe_size);
    b.graph.name = name.to_string();
    b.graph.inputs.push(ValueInfo::new(
        INPUT,
        DType::F32,
        vec![opts.batch, Some(3), Some(size), Some(size)],
    ));
    let mut x = INPUT.to_string();
    let widths: &[usize] = if cifar { &[16, 32, 64] } else { &[64, 128, 256, 512] };
    let mut channels;
    if cifar {
        x = b.conv("conv1", &x, 3, 16, 3, 1, 1)?;
        x = b.bn("bn1", &x, 16, 1.0)?;
        x = b.relu("relu", &x)?;
        channels = 16;
    } else {
        x = b.conv("conv1", &x, 3, 64, 7, 2, 3)?;
        x = b.bn("bn1", &x, 64, 1.0)?;
        x = b.relu("relu", &x)?;
        x = b.maxpool("maxpool", &x)?;
        channels = 64;
    }
    for (stage, (&n_blocks, &width)) in blocks.iter().zip(widths).enumerate() {
        for block in 0..n_blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let prefix = format!("layer{}.{block}", stage + 1);
            // The residual branch's last BatchNorm is scaled down with the stage's depth so
            // the identity path does not grow without bound over many blocks.
            let branch_gain = 1.0 / (n_blocks as f32).sqrt();
            (x, channels) = if bottleneck {
                b.bottleneck(&prefix, &x, channels, width, stride, branch_gain)?
            } else {
                b.basic(&prefix, &x, channels, width, stride, branch_gain)?
            };
        }
    }
    x = b.add_node("avgpool", Op::GlobalAveragePool, &[&x], "avgpool")?;
    let features = b.add_node("flatten", Op::Flatten { axis: 1 }, &[&x], FEATURES)?;
    let fc_weight = Tensor::from_f32(
        &[classes, channels],
        b.rng.normals(classes * channels, 1.0 / (channels as f32).sqrt()),
    )?;
    let w = b.constant("fc.weight", fc_weight);
    let bias = b.constant("fc.bias", Tensor::from_f32(&[classes], vec![0.0; classes])?);
    b.add_node(
        "fc",
        Op::Gemm(Gemm {
            trans_b: true,
            ..Gemm::default()
        }),
        &[&features, &w, &bias],
        LOGITS,
    )?;
    b.graph
        .outputs
        .push(ValueInfo::new(LOGITS, DType::F32, vec![opts.batch, Some(classes)]));
    b.graph
        .outputs
        .push(ValueInfo::new(FEATURES, DType::F32, vec![opts.batch, Some(channels)]));
    Ok(b.graph)
}

/// Builds a graph node by node while evaluating each node on a probe batch.
struct Builder {
    graph: Graph,
    rng: Rng,
    probe: std::collections::HashMap<String, Tensor>,
}

impl Builder {
    fn new(seed: u64, probe_size: usize) -> Self {
        let mut rng = Rng::new(seed);
        let probe_rng_seed = rng.next_u64();
        let n = 2 * 3 * probe_size * probe_size;
        let probe_input = Tensor::from_f32(
            &[2, 3, probe_size, probe_size],
            Rng::new(probe_rng_seed).normals(n, 1.0),
        )
        .unwrap_or_else(|_| Tensor::f32_scalar(0.0));
        let mut probe = std::collections::HashMap::new();
        probe.insert(INPUT.to_string(), probe_input);
        Builder {
            graph: Graph::default(),
            rng,
            probe,
        }
    }

    fn constant(&mut self, name: &str, t: Tensor) -> String {
        self.graph.initializers.insert(name.to_string(), t);
        name.to_string()
    }

    fn add_node(&mut self, name: &str, op: Op, inputs: &[&str], output: &str) -> Result<String, ZooError> {
        let node = Node::new(name, op, inputs, &[output]);
        let ins: Vec<Option<&Tensor>> = inputs
            .iter()
            .map(|i| self.probe.get(*i).or_else(|| self.graph.initializers.get(*i)))
            .collect();
        let out = weft_reference::eval_node(&node, &ins)?.remove(0);
        self.probe.insert(output.to_string(), out);
        self.graph.nodes.push(node);
        Ok(output.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<String, ZooError> {
        let fan_in = cin * k * k;
        let w = Tensor::from_f32(
            &[cout, cin, k, k],
            self.rng.normals(cout * fan_in, (2.0 / fan_in as f32).sqrt()),
        )?;
        let w = self.constant(&format!("{name}.weight"), w);
        let op = Op::Conv(Conv {
            kernel_shape: Some([k, k]),
            strides: [stride, stride],
            padding: Padding::Explicit([pad; 4]),
            ..Conv::default()
        });
        self.add_node(name, op, &[x, &w], &format!("{name}.out"))
    }

    /// BatchNorm whose running statistics are the probe batch's (with a little seeded
    /// jitter), so its output is roughly `gamma * N(0, 1) + beta`.
    fn bn(&mut self, name: &str, x: &str, c: usize, gamma_scale: f32) -> Result<String, ZooError> {
        let act = self.probe.get(x).map(Tensor::to_f32).unwrap_or_default();
        let per_channel = act.len() / c.max(1);
        let mut mean = vec![0f32; c];
        let mut var = vec![1f32; c];
        if act.ndim() == 4 && per_channel > 0 {
            for (ci, plane) in act.axis_iter(ndarray::Axis(1)).enumerate() {
                let m = plane.mean().unwrap_or(0.0);
                mean[ci] = m;
                var[ci] = plane.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / plane.len().max(1) as f32 + 1e-3;
            }
        }
        let gamma: Vec<f32> = (0..c).map(|_| gamma_scale * self.rng.range(0.8, 1.2)).collect();
        let beta: Vec<f32> = (0..c).map(|_| self.rng.normal() * 0.1).collect();
        let mean: Vec<f32> = mean.iter().map(|m| m + self.rng.normal() * 0.01).collect();
        let var: Vec<f32> = var.iter().map(|v| v * self.rng.range(0.9, 1.1)).collect();
        let s = self.constant(&format!("{name}.weight"), Tensor::from_f32(&[c], gamma)?);
        let b = self.constant(&format!("{name}.bias"), Tensor::from_f32(&[c], beta)?);
        let m = self.constant(&format!("{name}.running_mean"), Tensor::from_f32(&[c], mean)?);
        let v = self.constant(&format!("{name}.running_var"), Tensor::from_f32(&[c], var)?);
        self.add_node(
            name,
            Op::BatchNormalization { epsilon: 1e-5 },
            &[x, &s, &b, &m, &v],
            &format!("{name}.out"),
        )
    }

    fn relu(&mut self, name: &str, x: &str) -> Result<String, ZooError> {
        self.add_node(name, Op::Relu, &[x], &format!("{name}.out"))
    }

    fn maxpool(&mut self, name: &str, x: &str) -> Result<String, ZooError> {
        let op = Op::MaxPool(Pool {
            kernel_shape: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            padding: Padding::Explicit([1; 4]),
            ceil_mode: false,
            count_include_pad: false,
        });
        self.add_node(name, op, &[x], &format!("{name}.out"))
    }

    fn shortcut(&mut self, prefix: &str, x: &str, cin: usize, cout: usize, stride: usize) -> Result<String, ZooError> {
        if stride == 1 && cin == cout {
            return Ok(x.to_string());
        }
        let d = self.conv(&format!("{prefix}.downsample.0"), x, cin, cout, 1, stride, 0)?;
        self.bn(&format!("{prefix}.downsample.1"), &d, cout, 1.0)
    }

    /// Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets).
    fn basic(
        &mut self,
        p: &str,
        x: &str,
        cin: usize,
        width: usize,
        stride: usize,
        gain: f32,
    ) -> Result<(String, usize), ZooError> {
        let y = self.conv(&format!("{p}.conv1"), x, cin, width, 3, stride, 1)?;
        let y = self.bn(&format!("{p}.bn1"), &y, width, 1.0)?;
        let y = self.relu(&format!("{p}.relu1"), &y)?;
        let y = self.conv(&format!("{p}.conv2"), &y, width, width, 3, 1, 1)?;
        let y = self.bn(&format!("{p}.bn2"), &y, width, gain)?;
        let s = self.shortcut(p, x, cin, width, stride)?;
        let y = self.add_node(&format!("{p}.add"), Op::Add, &[&y, &s], &format!("{p}.add.out"))?;
        Ok((self.relu(&format!("{p}.relu2"), &y)?, width))
    }

    /// 1x1, 3x3 (carrying the stride, as in v1.5), 1x1 with expansion 4.
    fn bottleneck(
        &mut self,
        p: &str,
        x: &str,
        cin: usize,
        width: usize,
        stride: usize,
        gain: f32,
    ) -> Result<(String, usize), ZooError> {
        let cout = width * 4;
        let y = self.conv(&format!("{p}.conv1"), x, cin, width, 1, 1, 0)?;
        let y = self.bn(&format!("{p}.bn1"), &y, width, 1.0)?;
        let y = self.relu(&format!("{p}.relu1"), &y)?;
        let y = self.conv(&format!("{p}.conv2"), &y, width, width, 3, stride, 1)?;
        let y = self.bn(&format!("{p}.bn2"), &y, width, 1.0)?;
        let y = self.relu(&format!("{p}.relu2"), &y)?;
        let y = self.conv(&format!("{p}.conv3"), &y, width, cout, 1, 1, 0)?;
        let y = self.bn(&format!("{p}.bn3"), &y, cout, gain)?;
        let s = self.shortcut(p, x, cin, cout, stride)?;
        let y = self.add_node(&format!("{p}.add"), Op::Add, &[&y, &s], &format!("{p}.add.out"))?;
        Ok((self.relu(&format!("{p}.relu3"), &y)?, cout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_refused() {
        assert!(matches!(
            build("vgg16", &ZooOptions::default()),
            Err(ZooError::Unknown(_))
        ));
    }

    #[test]
    fn resnet8_is_seeded_and_sane() {
        let a = build(
            "resnet8",
            &ZooOptions {
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let b = build(
            "resnet8",
            &ZooOptions {
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let c = build(
            "resnet8",
            &ZooOptions {
                seed: 4,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a.initializers, c.initializers);
    }
}
