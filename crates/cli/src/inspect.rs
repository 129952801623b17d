//! `weft inspect`: a model's structure and cost.

use std::collections::BTreeMap;
use std::path::Path;

pub fn inspect(path: &Path, batch: usize, layers: bool, json: bool) -> anyhow::Result<()> {
    let loaded = crate::model::open(path)?;
    let graph = loaded.graph();
    let inferred = crate::bench::infer_at(graph, batch)?;
    if json {
        let doc = as_json(path, &loaded, &inferred, batch, layers);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("model      {}", path.display());
    match &loaded {
        crate::model::Loaded::Onnx(m) => println!(
            "graph      {} (ONNX opset {}, producer '{}')",
            graph.name, m.opset, m.producer
        ),
        crate::model::Loaded::Package(p) => {
            println!(
                "package    {} (format {}, precision {})",
                p.name,
                weft_compile::FORMAT_VERSION,
                p.precision
            );
            let width = p.metadata.keys().map(String::len).max().unwrap_or(0).max(18);
            for (k, v) in &p.metadata {
                println!("  {k:<width$} {v}");
            }
            println!(
                "preprocess {}",
                serde_json::to_string(&p.preprocess).unwrap_or_default()
            );
            if !p.labels.is_empty() {
                println!(
                    "labels     {} ({} ...)",
                    p.labels.len(),
                    p.labels.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    for i in &graph.inputs {
        println!("input      {} {} {}", i.name, i.dtype, dims(&i.shape));
    }
    for o in &graph.outputs {
        let s = inferred.shape(&o.name).map(|s| format!("{s:?}")).unwrap_or_default();
        println!("output     {} {s}", o.name);
    }
    let mut by_op: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut total_macs = 0u64;
    if layers {
        println!(
            "\n{:<40} {:<20} {:>22} {:>12} {:>14}",
            "node", "op", "output shape", "params", "MACs"
        );
    }
    for node in &graph.nodes {
        let out = crate::bench::output_shape(node, &inferred);
        let macs = crate::bench::node_macs(node, &inferred);
        let params = node_params(graph, node);
        total_macs += macs;
        let e = by_op.entry(node.op.name()).or_default();
        e.0 += 1;
        e.1 += macs;
        if layers {
            println!(
                "{:<40} {:<20} {:>22} {:>12} {:>14}",
                node.name,
                node.op.name(),
                format!("{out:?}"),
                params,
                macs
            );
        }
    }
    println!("\n{:<22} {:>6} {:>16}", "op", "count", "MACs");
    for (op, (count, macs)) in &by_op {
        println!("{op:<22} {count:>6} {macs:>16}");
    }
    println!("\nnodes      {}", graph.nodes.len());
    println!("parameters {}", graph.parameter_count());
    println!(
        "MACs       {total_macs} ({:.3} G) at batch {batch}",
        total_macs as f64 / 1e9
    );
    Ok(())
}

/// What the text report says, as one JSON document (`--json`): the same names and numbers,
/// for scripts.
fn as_json(
    path: &Path,
    loaded: &crate::model::Loaded,
    inferred: &weft_core::shape::Shapes,
    batch: usize,
    layers: bool,
) -> serde_json::Value {
    use serde_json::json;
    let graph = loaded.graph();
    let mut doc = json!({
        "model": path.display().to_string(),
        "graph": graph.name,
        "batch": batch,
    });
    match loaded {
        crate::model::Loaded::Onnx(m) => {
            doc["format"] = json!("onnx");
            doc["opset"] = json!(m.opset);
            doc["producer"] = json!(m.producer);
        }
        crate::model::Loaded::Package(p) => {
            doc["format"] = json!("package");
            doc["package"] = json!({
                "name": p.name,
                "format_version": weft_compile::FORMAT_VERSION,
                "precision": p.precision.to_string(),
                "metadata": p.metadata,
                "preprocess": p.preprocess,
                "labels": p.labels,
            });
        }
    }
    let shape = |s: &[Option<usize>]| -> Vec<serde_json::Value> {
        s.iter()
            .map(|d| d.map_or(serde_json::Value::Null, |d| json!(d)))
            .collect()
    };
    doc["inputs"] = graph
        .inputs
        .iter()
        .map(|i| json!({"name": i.name, "dtype": i.dtype.to_string(), "shape": shape(&i.shape)}))
        .collect();
    doc["outputs"] = graph
        .outputs
        .iter()
        .map(|o| json!({"name": o.name, "shape": inferred.shape(&o.name)}))
        .collect();
    let mut by_op: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut total_macs = 0u64;
    for node in &graph.nodes {
        let macs = crate::bench::node_macs(node, inferred);
        total_macs += macs;
        let e = by_op.entry(node.op.name()).or_default();
        e.0 += 1;
        e.1 += macs;
        if layers {
            let params = node_params(graph, node);
            rows.push(json!({
                "name": node.name,
                "op": node.op.name(),
                "output_shape": crate::bench::output_shape(node, inferred),
                "params": params,
                "macs": macs,
            }));
        }
    }
    doc["ops"] = by_op
        .iter()
        .map(|(op, (count, macs))| json!({"op": op, "count": count, "macs": macs}))
        .collect();
    if layers {
        doc["layers"] = json!(rows);
    }
    doc["nodes"] = json!(graph.nodes.len());
    doc["parameters"] = json!(graph.parameter_count());
    doc["macs"] = json!(total_macs);
    doc
}

/// The weights a node reads (its initializer inputs' elements).
fn node_params(graph: &weft_core::Graph, node: &weft_core::Node) -> usize {
    node.inputs
        .iter()
        .filter_map(|i| graph.initializers.get(i))
        .map(|t| t.len())
        .sum()
}

fn dims(shape: &[Option<usize>]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}
