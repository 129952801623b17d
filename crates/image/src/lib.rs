//! Image decoding (JPEG, PNG) and preprocessing into model input tensors, as described by
//! a [`Preprocess`] spec that travels inside each package.

use std::str::FromStr;

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use serde::{Deserialize, Serialize};
use weft_core::Tensor;

/// Largest image (in pixels) weft decodes; larger declared sizes are refused before any
/// pixel memory is allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image is too large: {width}x{height} exceeds the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    #[error("invalid preprocessing spec: {0}")]
    Spec(String),
}

/// Channel order of the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
    Gray,
}

/// Memory layout of the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How an image becomes a model input: resize the short side, centre-crop, map pixels
/// 0..255 linearly onto `range`, then `(v - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Resize (bilinear) so the short side has this length; `None` resizes straight to
    /// the crop size.
    pub resize: Option<u32>,
    /// Centre crop `[height, width]`; `None` takes the model input's size.
    pub crop: Option<[u32; 2]>,
    pub range: [f32; 2],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub channels: ChannelOrder,
    pub layout: Layout,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: None,
            crop: None,
            range: [0.0, 1.0],
            mean: vec![0.0],
            std: vec![1.0],
            channels: ChannelOrder::Rgb,
            layout: Layout::Nchw,
        }
    }
}

impl Preprocess {
    /// torchvision's ImageNet preprocessing.
    pub fn imagenet() -> Self {
        Preprocess {
            resize: Some(256),
            crop: Some([224, 224]),
            range: [0.0, 1.0],
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            ..Default::default()
        }
    }

    /// Project Brainwave's ResNet-50 preprocessing: short side 256, crop 224, RGB, mean
    /// subtraction on 0..255 values, no std division.
    pub fn brainwave() -> Self {
        Preprocess {
            resize: Some(256),
            crop: Some([224, 224]),
            range: [0.0, 255.0],
            mean: vec![123.68, 116.779, 103.939],
            std: vec![1.0, 1.0, 1.0],
            ..Default::default()
        }
    }

    fn channel_count(&self) -> usize {
        if self.channels == ChannelOrder::Gray { 1 } else { 3 }
    }

    /// Decodes and preprocesses one encoded image to a `[1, C, H, W]` (or NHWC) tensor.
    /// `size` is the model input's `[height, width]`, used when the spec has no crop.
    pub fn apply(&self, bytes: &[u8], size: [u32; 2], max_pixels: u64) -> Result<Tensor, ImageError> {
        let img = decode(bytes, max_pixels)?;
        self.apply_image(&img, size)
    }

    /// Preprocesses a decoded image.
    pub fn apply_image(&self, img: &DynamicImage, size: [u32; 2]) -> Result<Tensor, ImageError> {
        let [ch, cw] = self.crop.unwrap_or(size);
        if ch == 0 || cw == 0 {
            return Err(ImageError::Spec("crop size must be positive".into()));
        }
        let img = match self.resize {
            Some(short) => {
                let (w, h) = (img.width().max(1), img.height().max(1));
                let (nw, nh) = if w <= h {
                    (
                        short,
                        ((u64::from(h) * u64::from(short)).div_ceil(u64::from(w)).max(1)) as u32,
                    )
                } else {
                    (
                        ((u64::from(w) * u64::from(short)).div_ceil(u64::from(h)).max(1)) as u32,
                        short,
                    )
                };
                img.resize_exact(nw, nh, FilterType::Triangle)
            }
            None => img.resize_exact(cw, ch, FilterType::Triangle),
        };
        if img.width() < cw || img.height() < ch {
            return Err(ImageError::Spec(format!(
                "resized image {}x{} is smaller than the crop {cw}x{ch}",
                img.width(),
                img.height()
            )));
        }
        let x0 = (img.width() - cw) / 2;
        let y0 = (img.height() - ch) / 2;
        let img = img.crop_imm(x0, y0, cw, ch);
        let c = self.channel_count();
        let (h, w) = (ch as usize, cw as usize);
        let pixels: Vec<u8> = if c == 1 {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        };
        let mut out = vec![0f32; c * h * w];
        let span = self.range[1] - self.range[0];
        let pick = |v: &Vec<f32>, i: usize| *v.get(i).or(v.first()).unwrap_or(&0.0);
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    let src = if self.channels == ChannelOrder::Bgr { 2 - k } else { k };
                    let p = f32::from(pixels[(y * w + x) * c + src]);
                    let v = (self.range[0] + p / 255.0 * span - pick(&self.mean, k)) / pick(&self.std, k);
                    let idx = match self.layout {
                        Layout::Nchw => (k * h + y) * w + x,
                        Layout::Nhwc => (y * w + x) * c + k,
                    };
                    out[idx] = v;
                }
            }
        }
        let shape = match self.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        };
        Tensor::from_f32(&shape, out).map_err(|e| ImageError::Spec(e.to_string()))
    }
}

/// Decodes a JPEG or PNG, refusing images whose declared size exceeds `max_pixels` before
/// allocating their pixels.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError::Decode(
            "unknown image format (JPEG and PNG are supported)".into(),
        ));
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    reader.limits(limits);
    reader.decode().map_err(|e| ImageError::Decode(e.to_string()))
}

impl FromStr for Preprocess {
    type Err = ImageError;

    /// `PRESET[,key=value...]` with presets `imagenet`, `brainwave`, `none`, and keys
    /// `resize=N|none`, `crop=N|HxW|none`, `range=A:B`, `mean=a:b:c`, `std=a:b:c`,
    /// `channels=rgb|bgr|gray`, `layout=nchw|nhwc`.
    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = |m: String| ImageError::Spec(m);
        let mut p = Preprocess::default();
        for (i, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let Some((key, value)) = part.split_once('=') else {
                if i > 0 {
                    return Err(bad(format!("'{part}' is not key=value")));
                }
                p = match part {
                    "imagenet" => Preprocess::imagenet(),
                    "brainwave" => Preprocess::brainwave(),
                    "none" => Preprocess::default(),
                    other => return Err(bad(format!("unknown preset '{other}' (imagenet, brainwave, none)"))),
                };
                continue;
            };
            let floats = |v: &str| -> Result<Vec<f32>, ImageError> {
                v.split(':')
                    .map(|x| {
                        x.parse::<f32>()
                            .map_err(|_| bad(format!("'{x}' in {key} is not a number")))
                    })
                    .collect()
            };
            match key {
                "resize" => {
                    p.resize = if value == "none" {
                        None
                    } else {
                        Some(
                            value
                                .parse()
                                .ok()
                                .filter(|&v: &u32| v > 0)
                                .ok_or_else(|| bad(format!("bad resize '{value}'")))?,
                        )
                    }
                }
                "crop" => {
                    p.crop = if value == "none" {
                        None
                    } else {
                        let (h, w) = value.split_once('x').unwrap_or((value, value));
                        let (h, w) = (h.parse::<u32>().ok(), w.parse::<u32>().ok());
                        match (h, w) {
                            (Some(h), Some(w)) if h > 0 && w > 0 => Some([h, w]),
                            _ => return Err(bad(format!("bad crop '{value}'"))),
                        }
                    }
                }
                "range" => match floats(value)?.as_slice() {
                    [a, b] if a != b => p.range = [*a, *b],
                    _ => return Err(bad(format!("range needs two different numbers A:B, got '{value}'"))),
                },
                "mean" => p.mean = floats(value)?,
                "std" => {
                    p.std = floats(value)?;
                    if p.std.iter().any(|&v| v == 0.0 || !v.is_finite()) {
                        return Err(bad("std values must be non-zero".into()));
                    }
                }
                "channels" => {
                    p.channels = match value {
                        "rgb" => ChannelOrder::Rgb,
                        "bgr" => ChannelOrder::Bgr,
                        "gray" => ChannelOrder::Gray,
                        other => return Err(bad(format!("unknown channels '{other}'"))),
                    }
                }
                "layout" => {
                    p.layout = match value {
                        "nchw" => Layout::Nchw,
                        "nhwc" => Layout::Nhwc,
                        other => return Err(bad(format!("unknown layout '{other}'"))),
                    }
                }
                other => return Err(bad(format!("unknown key '{other}'"))),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 128]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn spec_parses_presets_and_overrides() {
        let p: Preprocess = "brainwave,crop=200x100,layout=nhwc".parse().unwrap();
        assert_eq!(p.crop, Some([200, 100]));
        assert_eq!(p.mean[0], 123.68);
        assert_eq!(p.layout, Layout::Nhwc);
        assert!("bogus".parse::<Preprocess>().is_err());
        assert!("none,std=0".parse::<Preprocess>().is_err());
        assert!("none,resize=-1".parse::<Preprocess>().is_err());
    }

    #[test]
    fn applies_resize_crop_and_normalisation() {
        let p: Preprocess = "none,resize=8,crop=4,range=0:255,mean=128".parse().unwrap();
        let t = p.apply(&png(16, 12), [4, 4], DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(t.shape(), &[1, 3, 4, 4]);
        let v = t.to_f32();
        assert!(v.iter().all(|&x| (-128.0..=127.0).contains(&x)));
        assert_eq!(v[[0, 2, 0, 0]], 0.0); // blue channel 128 - 128
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(matches!(
            decode(b"not an image", DEFAULT_MAX_PIXELS),
            Err(ImageError::Decode(_))
        ));
        let big = png(100, 100);
        assert!(matches!(decode(&big, 50), Err(ImageError::TooLarge { .. })));
        let mut cut = png(40, 40);
        cut.truncate(cut.len() / 2);
        assert!(decode(&cut, DEFAULT_MAX_PIXELS).is_err());
    }
}
