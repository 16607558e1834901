//! Reseller logos: validated uploads stored in Postgres (`reseller_logos`).
//!
//! - PNG: at most 192 KiB and 1024 × 1024 px, checked from its signature and `IHDR`
//!   chunk (the PNG specification, ISO/IEC 15948 §5.2 and §11.2.2).
//! - SVG: at most 64 KiB, refused (not cleaned) when it holds anything that could run
//!   or load: `<script>`, event handler attributes (`on…=`), `javascript:` or `data:`
//!   URLs, `<foreignObject>`, external references (`href` other than `#…`), `<!ENTITY`
//!   or `<!DOCTYPE`, `@import`. It is served besides with
//!   `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; sandbox`,
//!   so even one that slipped through could not run script when opened directly
//!   (OWASP File Upload Cheat Sheet; GitHub serves user SVG the same way).

use sqlx::PgConnection;

use crate::ids::ResellerId;

/// Largest PNG logo, bytes (the upload, with its form, must fit the router's 256 KiB
/// body limit).
pub const MAX_PNG_BYTES: usize = 192 * 1024;
/// Largest SVG logo, bytes.
pub const MAX_SVG_BYTES: usize = 64 * 1024;
/// Largest PNG width or height, px.
pub const MAX_PNG_SIDE: u32 = 1024;

/// Why a logo was refused (shown on the branding form, 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoError {
    /// Neither PNG nor SVG.
    #[error("upload a PNG or SVG image")]
    UnsupportedType,
    /// Too many bytes.
    #[error("the logo must be at most {0} KiB")]
    TooLarge(usize),
    /// A PNG wider or taller than [`MAX_PNG_SIDE`].
    #[error("the logo must be at most 1024 × 1024 pixels")]
    TooManyPixels,
    /// A malformed PNG.
    #[error("this PNG file is damaged")]
    BadPng,
    /// An SVG with script, event handlers or external references.
    #[error(
        "this SVG contains {0}, which logos may not (scripts, event handlers, external references)"
    )]
    UnsafeSvg(&'static str),
}

/// A logo that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    /// `image/png` or `image/svg+xml`.
    pub content_type: &'static str,
    /// The file.
    pub bytes: Vec<u8>,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Validates an uploaded file by its content (the declared type and name are not
/// trusted).
pub fn validate(bytes: Vec<u8>) -> Result<Logo, LogoError> {
    if bytes.starts_with(PNG_SIGNATURE) {
        if bytes.len() > MAX_PNG_BYTES {
            return Err(LogoError::TooLarge(MAX_PNG_BYTES / 1024));
        }
        // IHDR must be the first chunk: length 13, type, width, height (big-endian).
        let ihdr = bytes.get(8..24).ok_or(LogoError::BadPng)?;
        if ihdr[0..4] != [0, 0, 0, 13] || &ihdr[4..8] != b"IHDR" {
            return Err(LogoError::BadPng);
        }
        let side = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (w, h) = (side(&ihdr[8..12]), side(&ihdr[12..16]));
        if w == 0 || h == 0 {
            return Err(LogoError::BadPng);
        }
        if w > MAX_PNG_SIDE || h > MAX_PNG_SIDE {
            return Err(LogoError::TooManyPixels);
        }
        return Ok(Logo {
            content_type: "image/png",
            bytes,
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| LogoError::UnsupportedType)?;
    let lower = text.to_ascii_lowercase();
    if !lower.contains("<svg") {
        return Err(LogoError::UnsupportedType);
    }
    if bytes.len() > MAX_SVG_BYTES {
        return Err(LogoError::TooLarge(MAX_SVG_BYTES / 1024));
    }
    if let Some(what) = svg_hazard(&lower) {
        return Err(LogoError::UnsafeSvg(what));
    }
    Ok(Logo {
        content_type: "image/svg+xml",
        bytes,
    })
}

/// The first thing in a (lowercased) SVG that a logo may not hold.
fn svg_hazard(svg: &str) -> Option<&'static str> {
    let checks: [(&str, &'static str); 9] = [
        ("<script", "a script"),
        ("javascript:", "a javascript: URL"),
        ("data:", "a data: URL"),
        ("<foreignobject", "a foreignObject"),
        ("<!entity", "an entity declaration"),
        ("<!doctype", "a doctype"),
        ("@import", "a stylesheet import"),
        ("<iframe", "an iframe"),
        ("<embed", "an embed"),
    ];
    if let Some((_, what)) = checks.iter().find(|(needle, _)| svg.contains(needle)) {
        return Some(what);
    }
    // Event handler attributes: whitespace, `on`, letters, optional space, `=`.
    let b = svg.as_bytes();
    for i in 0..b.len().saturating_sub(3) {
        if b[i].is_ascii_whitespace() && b[i + 1] == b'o' && b[i + 2] == b'n' {
            let rest = &b[i + 3..];
            let letters = rest.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let after = rest[letters..].iter().find(|c| !c.is_ascii_whitespace());
            if letters > 0 && after == Some(&b'=') {
                return Some("an event handler");
            }
        }
    }
    // References other than to the document itself (`href="#id"`).
    for attr in ["href=\"", "href='", "href= \""] {
        for (at, _) in svg.match_indices(attr) {
            if !svg[at + attr.len()..].starts_with('#') {
                return Some("an external reference");
            }
        }
    }
    if svg.contains("url(") && !svg.contains("url(#") {
        return Some("an external reference");
    }
    None
}

/// Stores (or replaces) a reseller's logo.
pub async fn store(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    logo: &Logo,
) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let sha = hex::encode(Sha256::digest(&logo.bytes));
    sqlx::query(
        "insert into reseller_logos (reseller_id, content_type, bytes, sha256) values ($1, $2, $3, $4)
         on conflict (reseller_id) do update
            set content_type = excluded.content_type, bytes = excluded.bytes,
                sha256 = excluded.sha256, updated_at = now()",
    )
    .bind(reseller_id)
    .bind(logo.content_type)
    .bind(&logo.bytes)
    .bind(sha)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a reseller's logo.
pub async fn remove(conn: &mut PgConnection, reseller_id: ResellerId) -> anyhow::Result<()> {
    sqlx::query("delete from reseller_logos where reseller_id = $1")
        .bind(reseller_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A reseller's logo: content type and bytes.
pub async fn load(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    Ok(
        sqlx::query_as("select content_type, bytes from reseller_logos where reseller_id = $1")
            .bind(reseller_id)
            .fetch_optional(conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = PNG_SIGNATURE.to_vec();
        b.extend_from_slice(&[0, 0, 0, 13]);
        b.extend_from_slice(b"IHDR");
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn pngs_are_checked_by_content_and_size() {
        assert_eq!(validate(png(120, 40)).unwrap().content_type, "image/png");
        assert_eq!(validate(png(2000, 40)), Err(LogoError::TooManyPixels));
        assert_eq!(validate(png(0, 40)), Err(LogoError::BadPng));
        assert_eq!(validate(PNG_SIGNATURE.to_vec()), Err(LogoError::BadPng));
        let mut big = png(10, 10);
        big.resize(MAX_PNG_BYTES + 1, 0);
        assert_eq!(validate(big), Err(LogoError::TooLarge(192)));
        assert_eq!(
            validate(b"GIF89a....".to_vec()),
            Err(LogoError::UnsupportedType)
        );
    }

    #[test]
    fn svgs_that_could_run_or_load_anything_are_refused() {
        let ok = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><defs><linearGradient id="g"/></defs><rect fill="url(#g)" width="10" height="10"/><use href="#g"/></svg>"##;
        assert_eq!(validate(ok.to_vec()).unwrap().content_type, "image/svg+xml");
        for bad in [
            r#"<svg><script>alert(1)</script></svg>"#,
            r#"<svg onload="alert(1)"></svg>"#,
            r#"<svg><rect ONCLICK = "x"/></svg>"#,
            r#"<svg><a href="javascript:alert(1)">x</a></svg>"#,
            r#"<svg><image href="https://evil.example/x.png"/></svg>"#,
            r#"<svg><foreignObject><div/></foreignObject></svg>"#,
            r#"<!DOCTYPE svg [<!ENTITY x "y">]><svg>&x;</svg>"#,
            r#"<svg><style>@import url(https://evil.example/a.css);</style></svg>"#,
        ] {
            assert!(
                matches!(
                    validate(bad.as_bytes().to_vec()),
                    Err(LogoError::UnsafeSvg(_))
                ),
                "{bad}"
            );
        }
    }
}
