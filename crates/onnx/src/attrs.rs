//! Typed access to a node's attributes, with errors that name the node.

use crate::proto::attribute_proto::AttributeType as At;
use crate::proto::{AttributeProto, NodeProto, TensorProto};
use crate::{OnnxError, Result};

/// A node's attributes plus what errors need to name it.
#[derive(Debug)]
pub struct Attrs<'a> {
    pub node: &'a NodeProto,
    pub name: String,
    pub opset: i64,
}

impl<'a> Attrs<'a> {
    pub fn unsupported(&self, what: impl Into<String>) -> OnnxError {
        OnnxError::Unsupported {
            node: self.name.clone(),
            op_type: self.node.op_type().to_string(),
            opset: self.opset,
            what: what.into(),
        }
    }

    /// The node breaks the ONNX specification (as opposed to using a feature weft lacks).
    pub fn invalid(&self, what: impl Into<String>) -> OnnxError {
        OnnxError::InvalidNode {
            node: self.name.clone(),
            op_type: self.node.op_type().to_string(),
            opset: self.opset,
            what: what.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn typed(&self, key: &str, want: At) -> Result<Option<&'a AttributeProto>> {
        match self.get(key) {
            None => Ok(None),
            Some(a) if a.r#type() == want || a.r#type() == At::Undefined => Ok(Some(a)),
            Some(a) => Err(self.invalid(format!(
                "attribute '{key}' should be {}, is {}",
                want.as_str_name(),
                a.r#type().as_str_name()
            ))),
        }
    }

    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        Ok(self.typed(key, At::Int)?.map_or(default, |a| a.i()))
    }

    pub fn float(&self, key: &str, default: f32) -> Result<f32> {
        Ok(self.typed(key, At::Float)?.map_or(default, |a| a.f()))
    }

    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.typed(key, At::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.typed(key, At::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn string(&self, key: &str) -> Result<Option<String>> {
        self.typed(key, At::String)?
            .map(|a| {
                String::from_utf8(a.s().to_vec()).map_err(|_| self.invalid(format!("attribute '{key}' is not UTF-8")))
            })
            .transpose()
    }

    pub fn tensor(&self, key: &str) -> Result<Option<&'a TensorProto>> {
        Ok(self.typed(key, At::Tensor)?.and_then(|a| a.t.as_ref()))
    }

    /// Non-negative integers of a list attribute, checked against an expected length.
    pub fn usizes(&self, key: &str, len: usize) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.ints(key)? else {
            return Ok(None);
        };
        if v.len() != len {
            return Err(self.unsupported(format!(
                "attribute '{key}' has {} values: {}-D windows are not supported (only 2-D, {len} values)",
                v.len(),
                if len == 4 { v.len() / 2 } else { v.len() }
            )));
        }
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| self.invalid(format!("attribute '{key}' has negative value {x}"))))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn pair(&self, key: &str, default: usize) -> Result<[usize; 2]> {
        Ok(self.usizes(key, 2)?.map_or([default, default], |v| [v[0], v[1]]))
    }
}
