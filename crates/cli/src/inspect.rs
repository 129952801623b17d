//! `weft inspect`: a model's structure and cost.

use std::collections::BTreeMap;
use std::path::Path;

pub fn inspect(path: &Path, batch: usize, layers: bool) -> anyhow::Result<()> {
    let loaded = crate::model::open(path)?;
    let graph = loaded.graph();
    let inferred = crate::bench::infer_at(graph, batch)?;
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
            for (k, v) in &p.metadata {
                println!("  {k:<18} {v}");
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
        let params: usize = node
            .inputs
            .iter()
            .filter_map(|i| graph.initializers.get(i))
            .map(|t| t.len())
            .sum();
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

fn dims(shape: &[Option<usize>]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}
