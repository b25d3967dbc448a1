//! Uploads to PUT URLs presigned by the hub (`outputs[].presign`, ADR 0029): the uploader holds
//! the URLs of the files the job declared, never the storage keys. Each file is one PUT, so at most
//! 5 GiB (a multipart upload's part URLs need an upload id the hub does not create). The directory
//! must hold exactly the declared files: an undeclared file or a missing one fails the push before
//! anything is uploaded, so a partial result is never reported as the output.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Error, MAX_SINGLE_PUT, Store, regular_files};
use crate::manifest::Manifest;
use crate::paths;

impl Store {
    /// Uploads every regular file under `src` (its key under `prefix`) to its URL in `urls` (by
    /// key), sorted by key.
    pub async fn push_presigned(
        &self,
        src: &Path,
        prefix: &str,
        urls: &BTreeMap<String, url::Url>,
    ) -> Result<Manifest, Error> {
        let bucket = self.bucket.name().to_string();
        let mut plan = Vec::new();
        for rel in regular_files(src)? {
            let key = paths::key_for(prefix, &rel)?;
            let path = src.join(&rel);
            let Some(url) = urls.get(&key) else {
                return Err(Error::NotDeclared { path, bucket, key });
            };
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(Error::io("stat", &path))?
                .len();
            if size > MAX_SINGLE_PUT {
                return Err(Error::TooLarge {
                    path,
                    size,
                    limit: "one presigned PUT takes (5 GiB)",
                    fix: "split it into smaller files, or drop presign so that the uploader, with the keys, uploads it in parts",
                });
            }
            plan.push((path, key, url.clone()));
        }
        if let Some(key) = urls.keys().find(|k| !plan.iter().any(|(_, p, _)| p == *k)) {
            return Err(Error::NotWritten {
                bucket,
                key: key.clone(),
            });
        }
        let mut objects = Vec::with_capacity(plan.len());
        for (path, key, url) in plan {
            objects.push(self.put_single(&path, &key, url).await?);
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Manifest {
            bucket,
            objects,
            omitted: 0,
        })
    }
}
