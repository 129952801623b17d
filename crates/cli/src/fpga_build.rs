//! `weft program fpga`: an offline FPGA build directory for a package: the FPGA kernel
//! variant's source specialised to the package's layers, a `build.sh` with the vendor
//! compiler's commands (Intel's `aoc`, AMD Xilinx's `v++`) and the board's options, a
//! `plan.json` (layers, their macros, the `--fpga-model` estimate for the board) and a
//! README. Nothing here runs a vendor tool; the result loads with `--program-binary`.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

/// The vendor toolchains a build directory targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vendor {
    /// Intel FPGA SDK for OpenCL / oneAPI's `aoc` (.aocx images).
    Intel,
    /// AMD Xilinx Vitis `v++` (.xclbin images).
    Xilinx,
}

/// The vendor's name for a board weft's FPGA model knows: the BSP board name (`aoc
/// -board=`) or the Vitis platform (`v++ --platform`).
fn vendor_board(vendor: Vendor, board: &str) -> anyhow::Result<Option<&'static str>> {
    Ok(match (vendor, board) {
        (Vendor::Intel, "arria10-gx1150") => Some("a10gx"),
        (Vendor::Intel, "stratix10-gx2800") => Some("s10gx"),
        (Vendor::Xilinx, "alveo-u250") => Some("xilinx_u250_gen3x16_xdma_4_1_202210_1"),
        (_, b) if b.starts_with("custom:") => None,
        (Vendor::Intel, "alveo-u250") => bail!("--board alveo-u250 is an AMD Xilinx board: use --vendor xilinx"),
        (Vendor::Xilinx, b @ ("arria10-gx1150" | "stratix10-gx2800")) => {
            bail!("--board {b} is an Intel board: use --vendor intel")
        }
        (_, other) => bail!(
            "unknown board '{other}' (arria10-gx1150, stratix10-gx2800, alveo-u250, or custom:dsp=N,mhz=F,gbps=B with --platform)"
        ),
    })
}

fn build_script(vendor: Vendor, platform: &str, model: &str) -> String {
    match vendor {
        Vendor::Intel => format!(
            r#"#!/usr/bin/env bash
# Builds weft's FPGA kernel variant for '{model}' with the Intel FPGA SDK for OpenCL (aoc,
# also shipped with oneAPI's FPGA support). Usage: bash build.sh [emu|report|hw]
#   emu     the emulator image (aoc -march=emulator): runs on the host's CPU
#   report  the HLS reports only (loop pipelining, resources), in weft_fpga/reports
#   hw      the bitstream (hours), weft_fpga.aocx
# BOARD is the board name of the installed BSP (aoc -list-boards lists them).
set -euo pipefail
cd "$(dirname "$0")"
BOARD=${{BOARD:-{platform}}}
case "${{1:-hw}}" in
  emu) aoc -march=emulator -v -board="$BOARD" weft_fpga.cl -o weft_fpga_emu.aocx ;;
  report) aoc -rtl -report -v -board="$BOARD" weft_fpga.cl -o weft_fpga ;;
  hw) aoc -report -v -board="$BOARD" weft_fpga.cl -o weft_fpga.aocx ;;
  *) echo "usage: bash build.sh [emu|report|hw]" >&2; exit 2 ;;
esac
"#
        ),
        Vendor::Xilinx => format!(
            r#"#!/usr/bin/env bash
# Builds weft's FPGA kernel variant for '{model}' with AMD Xilinx Vitis (v++).
# Usage: bash build.sh [sw_emu|hw_emu|hw]
#   sw_emu  software emulation (runs the kernels on the host's CPU)
#   hw_emu  RTL simulation of the kernels
#   hw      the device image (hours)
# Every kernel of weft_fpga.cl is compiled (v++ takes all kernels of an OpenCL file when no
# --kernel is named). PLATFORM is the installed Vitis platform (platforminfo -l lists them).
set -euo pipefail
cd "$(dirname "$0")"
PLATFORM=${{PLATFORM:-{platform}}}
TARGET=${{1:-hw}}
case "$TARGET" in sw_emu|hw_emu|hw) ;; *) echo "usage: bash build.sh [sw_emu|hw_emu|hw]" >&2; exit 2 ;; esac
v++ -c -t "$TARGET" --platform "$PLATFORM" --save-temps -o "weft_fpga.$TARGET.xo" weft_fpga.cl
v++ -l -t "$TARGET" --platform "$PLATFORM" -o "weft_fpga.$TARGET.xclbin" "weft_fpga.$TARGET.xo"
"#
        ),
    }
}

fn readme(vendor: Vendor, board: &str, platform: &str, model: &str, layers: usize) -> String {
    let (image, run_device, steps) = match vendor {
        Vendor::Intel => (
            "weft_fpga.aocx",
            "opencl:Intel",
            "`bash build.sh emu` (emulator image), `bash build.sh report` (HLS reports), `bash build.sh hw` (bitstream)",
        ),
        Vendor::Xilinx => (
            "weft_fpga.hw.xclbin",
            "opencl:Xilinx",
            "`bash build.sh sw_emu`, `bash build.sh hw_emu`, `bash build.sh hw` (device image)",
        ),
    };
    format!(
        r#"# FPGA build of '{model}' ({board}, {vendor:?})

Written by `weft program fpga`. Files:

- `weft_fpga.cl`: weft's FPGA kernel variant specialised to this package: {layers} layer
  kernels, each with its geometry and constants as `#define W_...` lines before it (fixed loop
  bounds, `reqd_work_group_size(16, 1, 1)`, plain OpenCL C 1.2, the int8 multiply as a
  16 x 4 array of plain multiplies).
- `build.sh`: the vendor compiler's commands for `{platform}`: {steps}.
- `plan.json`: the layers, their kernels and macros, the nodes that run on the host, and
  weft's FPGA model estimate for this board (an estimate, not a measurement).

Before a board: `weft run MODEL.weft --kernels fpga --device pocl` (or `opencl:Oclgrind`)
runs this same source on the CPU, bit-exact with weft's integer reference (the emulation
flow). After the build, on the board's host:

    weft run MODEL.weft --kernels fpga --device {run_device} --program-binary {image} --input x.npy --output y.npy
    weft serve MODEL.weft --kernels fpga --device {run_device} --program-binary {image}

Not checked on hardware: weft's tests compile this source with clang's SPIR front end and run
it on PoCL and Oclgrind; no vendor compiler or board has run it. The board names in
`build.sh` are the vendors' reference ones; set BOARD or PLATFORM for yours.
"#
    )
}

/// Writes the build directory for `package` at `out`.
pub fn write(
    package: &weft_compile::Package,
    vendor: Vendor,
    board_spec: &str,
    platform: Option<&str>,
    out: &Path,
) -> anyhow::Result<()> {
    let board = crate::fpga::board(board_spec).map_err(anyhow::Error::msg)?;
    let known = vendor_board(vendor, board_spec)?;
    let Some(platform) = platform.or(known) else {
        bail!(
            "--board {board_spec}: a custom board needs --platform (the BSP board name for aoc, the Vitis platform for v++)"
        );
    };
    if platform.is_empty()
        || platform
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "_-.:/".contains(c)))
    {
        bail!("--platform '{platform}': use letters, digits and _ - . : / only");
    }
    let program = weft_opencl::fpga_program(package)?;
    let (estimates, arrays) = crate::fpga::estimate(&package.graph, 1, &board, weft_opencl::QCONV_TM)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let layers: Vec<_> = program
        .layers
        .iter()
        .map(|l| {
            let estimate = estimates.iter().find(|e| e.node == l.node).map(|e| {
                json!({"compute_us": e.compute_us, "memory_us": e.memory_us, "time_us": e.time_us, "efficiency": e.efficiency})
            });
            json!({
                "node": l.node,
                "kernel": l.kernel.name,
                "template": l.kernel.template.name(),
                "macs": l.macs,
                "shape": l.shape,
                "defines": l.kernel.defines.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "estimate": estimate,
            })
        })
        .collect();
    let total_us: f64 = estimates.iter().map(|e| e.time_us).sum();
    let plan = json!({
        "model": package.name,
        "vendor": format!("{vendor:?}").to_lowercase(),
        "board": board_spec,
        "platform": platform,
        "work_group": weft_opencl::FPGA_WG,
        "source": "weft_fpga.cl",
        "layers": layers,
        "host_nodes": program.host_nodes,
        "estimate": {
            "note": "weft's FPGA model: an estimate, not a measurement (docs/FPGA.md)",
            "dsps": board.dsps,
            "mhz": board.mhz,
            "gbps": board.gbps,
            "arrays": arrays,
            "batch": 1,
            "total_us": total_us,
        },
    });
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("weft_fpga.cl", &program.source)?;
    write("build.sh", &build_script(vendor, platform, &package.name))?;
    write("plan.json", &serde_json::to_string_pretty(&plan)?)?;
    write(
        "README.md",
        &readme(vendor, board_spec, platform, &package.name, program.layers.len()),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(out.join("build.sh"), std::fs::Permissions::from_mode(0o755));
    }
    eprintln!(
        "wrote an FPGA build of '{}' for {board_spec} ({vendor:?}, {platform}) to {}: {} layer kernels, {} nodes on the host; next: bash {}/build.sh",
        package.name,
        out.display(),
        program.layers.len(),
        program.host_nodes.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_map_to_their_vendor_and_mismatches_are_refused() {
        assert_eq!(vendor_board(Vendor::Intel, "arria10-gx1150").unwrap(), Some("a10gx"));
        assert!(vendor_board(Vendor::Xilinx, "alveo-u250").unwrap().is_some());
        assert_eq!(vendor_board(Vendor::Xilinx, "custom:dsp=1,mhz=1,gbps=1").unwrap(), None);
        let e = vendor_board(Vendor::Intel, "alveo-u250").unwrap_err().to_string();
        assert!(e.contains("--vendor xilinx"), "{e}");
        let e = vendor_board(Vendor::Xilinx, "stratix10-gx2800")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--vendor intel"), "{e}");
        assert!(vendor_board(Vendor::Intel, "virtex-2").is_err());
    }
}
