//! Checks on deployment flags, run before anything is written.

use crate::error::DeployError;

fn invalid(msg: String) -> DeployError {
    DeployError::Invalid(msg)
}

/// An RFC 1123 label: lowercase letters, digits and '-', starting with a letter, ending with
/// a letter or digit, at most 63 characters (Kubernetes names, ACI DNS name labels).
pub fn dns_label(flag: &str, v: &str) -> Result<(), DeployError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag} '{v}' is not a valid DNS label (1-63 lowercase letters, digits or '-', starting with a letter and not ending with '-')"
        )))
    }
}

/// A DNS subdomain: dot-separated labels (digits may start a label), at most 253 characters.
fn dns_subdomain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A port other than 0.
pub fn port(flag: &str, p: u16) -> Result<(), DeployError> {
    if p == 0 {
        Err(invalid(format!("{flag} must be between 1 and 65535, got 0")))
    } else {
        Ok(())
    }
}

/// Two ports that must differ.
pub fn ports(grpc: u16, http: u16) -> Result<(), DeployError> {
    port("--port", grpc)?;
    port("--http-port", http)?;
    if grpc == http {
        return Err(invalid(format!("--port and --http-port must differ (both {grpc})")));
    }
    Ok(())
}

/// A positive finite number with at most `decimals` decimal places.
pub fn positive(flag: &str, v: f64, decimals: i32, max: f64) -> Result<(), DeployError> {
    let scaled = v * 10f64.powi(decimals);
    if !v.is_finite() || v <= 0.0 || v > max || (scaled - scaled.round()).abs() > 1e-6 {
        return Err(invalid(format!(
            "{flag} must be a positive number up to {max} with at most {decimals} decimal places, got {v}"
        )));
    }
    Ok(())
}

/// A Kubernetes CPU quantity: cores ("2", "0.5") or millicores ("500m").
pub fn cpu_quantity(flag: &str, v: &str) -> Result<(), DeployError> {
    let body = v.strip_suffix('m').unwrap_or(v);
    if decimal(body) && body.parse::<f64>().is_ok_and(|x| x > 0.0) && !(v.ends_with('m') && body.contains('.')) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag} '{v}' is not a CPU quantity (cores such as 2 or 0.5, or millicores such as 500m)"
        )))
    }
}

/// A Kubernetes memory quantity: bytes with an optional binary or decimal suffix.
pub fn memory_quantity(flag: &str, v: &str) -> Result<(), DeployError> {
    let body = ["Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"]
        .iter()
        .find_map(|s| v.strip_suffix(s))
        .unwrap_or(v);
    if decimal(body) && body.parse::<f64>().is_ok_and(|x| x > 0.0) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{flag} '{v}' is not a memory quantity (for example 4Gi, 512Mi or 2G)"
        )))
    }
}

fn decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()))
}

/// A label or node-selector key: `[prefix/]name`, name 1-63 alphanumerics, '-', '_', '.'
/// (alphanumeric at both ends), prefix a DNS subdomain.
pub fn label_key(v: &str) -> bool {
    let (prefix, name) = match v.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, v),
    };
    prefix.is_none_or(dns_subdomain) && label_value(name) && !name.is_empty()
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_', '.' with alphanumeric ends.
pub fn label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// `KEY=VALUE` for --node-selector.
pub fn node_selector(v: &str) -> Result<(String, String), DeployError> {
    let (k, val) = v
        .split_once('=')
        .ok_or_else(|| invalid(format!("--node-selector takes KEY=VALUE, got '{v}'")))?;
    if !label_key(k) || !label_value(val) {
        return Err(invalid(format!(
            "--node-selector '{v}': '{k}' must be a label key ([prefix/]name) and '{val}' a label value (at most 63 letters, digits, '-', '_', '.')"
        )));
    }
    Ok((k.to_string(), val.to_string()))
}

/// `NAME=COUNT` for --fpga-resource: an extended resource name `domain/name` (outside the
/// kubernetes.io domains) and a positive whole count.
pub fn extended_resource(v: &str) -> Result<(String, u64), DeployError> {
    let (name, count) = v
        .split_once('=')
        .ok_or_else(|| invalid(format!("--fpga-resource takes NAME=COUNT, got '{v}'")))?;
    let ok_name = match name.split_once('/') {
        Some((domain, n)) => {
            dns_subdomain(domain)
                && !domain.ends_with("kubernetes.io")
                && label_value(n)
                && !n.is_empty()
                && !n.contains('/')
        }
        None => false,
    };
    if !ok_name {
        return Err(invalid(format!(
            "--fpga-resource '{name}' is not an extended resource name (domain/name, for example microsoft.com/fpga_catapult or xilinx.com/fpga-xilinx_u250)"
        )));
    }
    let n: u64 = count.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        invalid(format!(
            "--fpga-resource {name}: count must be a whole number of at least 1, got '{count}'"
        ))
    })?;
    Ok((name.to_string(), n))
}

/// An environment variable name (for --api-key-env).
pub fn env_name(flag: &str, v: &str) -> Result<(), DeployError> {
    let ok = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !v.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{flag} '{v}' is not an environment variable name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["weft", "weft-fashion-1", "a"] {
            assert!(dns_label("--x", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Weft", "1weft", "weft-", "we_ft", &"a".repeat(64)] {
            assert!(dns_label("--x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for ok in ["2", "0.5", "500m", "1.25"] {
            assert!(cpu_quantity("--cpu", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-1", "0", "1.5m", "two", "1e3", "m"] {
            assert!(cpu_quantity("--cpu", bad).is_err(), "{bad}");
        }
        for ok in ["4Gi", "512Mi", "2G", "1000000"] {
            assert!(memory_quantity("--memory", ok).is_ok(), "{ok}");
        }
        for bad in ["", "4GB", "Gi", "-1Gi", "0"] {
            assert!(memory_quantity("--memory", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_ports_and_names() {
        assert!(positive("--cpu", 0.5, 2, 4.0).is_ok());
        assert!(positive("--cpu", 0.125, 2, 4.0).is_err());
        assert!(positive("--cpu", 0.0, 2, 4.0).is_err());
        assert!(positive("--cpu", f64::NAN, 2, 4.0).is_err());
        assert!(positive("--cpu", 8.0, 2, 4.0).is_err());
        assert!(ports(50051, 8080).is_ok());
        assert!(ports(0, 8080).is_err());
        assert!(ports(8080, 8080).is_err());
        assert!(env_name("--api-key-env", "WEFT_KEY").is_ok());
        assert!(env_name("--api-key-env", "1KEY").is_err());
        assert!(env_name("--api-key-env", "A-B").is_err());
    }

    #[test]
    fn selectors_and_extended_resources() {
        assert_eq!(
            node_selector("accelerator=fpga").ok(),
            Some(("accelerator".into(), "fpga".into()))
        );
        assert!(node_selector("kubernetes.azure.com/agentpool=fpga1").is_ok());
        assert!(node_selector("novalue").is_err());
        assert!(node_selector("bad key=x").is_err());
        assert_eq!(
            extended_resource("microsoft.com/fpga_catapult=1").ok(),
            Some(("microsoft.com/fpga_catapult".into(), 1))
        );
        assert!(extended_resource("fpga=1").is_err());
        assert!(extended_resource("microsoft.com/fpga=0").is_err());
        assert!(extended_resource("microsoft.com/fpga=1.5").is_err());
        assert!(extended_resource("kubernetes.io/fpga=1").is_err());
        assert!(extended_resource("Microsoft.com/fpga=1").is_err());
    }
}
