//! The distribution API calls mirroring makes: manifests (HEAD, GET, PUT) and blobs (HEAD,
//! GET, cross-repository mount, monolithic streamed upload).

use super::*;

impl RegistryClient {
    pub(super) fn manifest_url(&self, img: &ImageRef, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(&img.registry),
            img.repository
        )
    }

    /// `GET /v2/`: is the registry there and do we get in?
    pub async fn ping(&self, registry: &str) -> Result<(), MirrorError> {
        let url = format!("{}/v2/", self.base_url(registry));
        let what = format!("registry {registry}");
        self.retry(&what, || async {
            let resp = self
                .send(registry, &Scope::none(), &what, |h| h.get(&url))
                .await?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(self.error_for(registry, &what, &url, resp).await)
            }
        })
        .await
    }

    /// `HEAD` a manifest: `None` when absent.
    pub async fn head_manifest(&self, img: &ImageRef) -> Result<Option<ManifestHead>, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::pull(&img.repository), &what, |h| {
                    h.head(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(ManifestHead {
                    digest: header(&resp, "docker-content-digest"),
                    media_type: header(&resp, "content-type"),
                })),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(self.error_for(&img.registry, &what, &url, resp).await),
            }
        })
        .await
    }

    /// `GET` a manifest by the reference's digest or tag; verifies the bytes against the digest
    /// when fetched by digest (and against `Docker-Content-Digest` when the registry sends one).
    pub async fn get_manifest(&self, img: &ImageRef) -> Result<RawManifest, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::pull(&img.repository), &what, |h| {
                    h.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(MirrorError::NotFound {
                    image: img.to_string(),
                    registry: img.registry.clone(),
                });
            }
            if !resp.status().is_success() {
                return Err(self.error_for(&img.registry, &what, &url, resp).await);
            }
            let content_type = header(&resp, "content-type");
            let served_digest = header(&resp, "docker-content-digest");
            if resp
                .content_length()
                .is_some_and(|l| l as usize > MAX_MANIFEST_BYTES)
            {
                return Err(MirrorError::Manifest {
                    image: img.to_string(),
                    message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
                });
            }
            let bytes = resp.bytes().await.map_err(|e| MirrorError::Http {
                what: what.clone(),
                url: url.clone(),
                status: 0,
                message: e.to_string(),
            })?;
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(MirrorError::Manifest {
                    image: img.to_string(),
                    message: format!("larger than {MAX_MANIFEST_BYTES} bytes"),
                });
            }
            let digest = sha256_digest(&bytes);
            if let Some(expected) = img.digest.as_ref().or(served_digest.as_ref()) {
                if expected.starts_with("sha256:") && *expected != digest {
                    return Err(MirrorError::DigestMismatch {
                        what: what.clone(),
                        expected: expected.clone(),
                        actual: digest,
                    });
                }
            }
            let media_type = crate::mirror::manifest::media_type_of(&bytes)
                .or(content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
                .unwrap_or_default();
            Ok(RawManifest {
                bytes: bytes.to_vec(),
                media_type,
                digest,
            })
        })
        .await
    }

    /// `PUT` manifest bytes as they are under the reference's tag (or digest); checks the
    /// registry stored them under the digest of those bytes. Returns that digest.
    pub async fn put_manifest(
        &self,
        img: &ImageRef,
        manifest: &RawManifest,
    ) -> Result<String, MirrorError> {
        let url = self.manifest_url(img, img.reference());
        let what = format!("manifest {img}");
        self.retry(&what, || async {
            let resp = self
                .send(&img.registry, &Scope::push(&img.repository), &what, |h| {
                    h.put(&url)
                        .header(CONTENT_TYPE, &manifest.media_type)
                        .body(manifest.bytes.clone())
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.write_error(&img.registry, &what, &url, resp).await);
            }
            if let Some(d) = header(&resp, "docker-content-digest") {
                if d != manifest.digest {
                    return Err(MirrorError::DigestMismatch {
                        what: format!("{what} as stored by {}", img.registry),
                        expected: manifest.digest.clone(),
                        actual: d,
                    });
                }
            }
            Ok(manifest.digest.clone())
        })
        .await
    }

    pub(super) async fn write_error(
        &self,
        registry: &str,
        what: &str,
        url: &str,
        resp: Response,
    ) -> MirrorError {
        let status = resp.status().as_u16();
        match status {
            401 | 403 => self.error_for(registry, what, url, resp).await,
            // Read-only mode answers 405; a full disk or quota shows as 5xx/413/507.
            405 | 413 | 507 => MirrorError::WriteRefused {
                target: registry.into(),
                what: what.into(),
                status,
                message: body_excerpt(resp).await,
            },
            s if s >= 500 => {
                let message = body_excerpt(resp).await;
                let lower = message.to_lowercase();
                if lower.contains("no space")
                    || lower.contains("read-only")
                    || lower.contains("readonly")
                {
                    MirrorError::WriteRefused {
                        target: registry.into(),
                        what: what.into(),
                        status,
                        message,
                    }
                } else {
                    MirrorError::Http {
                        what: what.into(),
                        url: url.into(),
                        status,
                        message,
                    }
                }
            }
            _ => self.error_for(registry, what, url, resp).await,
        }
    }

    pub(super) fn blob_url(&self, registry: &str, repo: &str, digest: &str) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base_url(registry))
    }

    /// `HEAD` a blob: its size when present.
    pub async fn head_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<u64>, MirrorError> {
        let url = self.blob_url(registry, repo, digest);
        let what = format!("blob {digest} in {registry}/{repo}");
        self.retry(&what, || async {
            let resp = self
                .send(registry, &Scope::pull(repo), &what, |h| h.head(&url))
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(
                    header(&resp, "content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0),
                )),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(self.error_for(registry, &what, &url, resp).await),
            }
        })
        .await
    }

    /// `GET` a blob; the caller streams the body (redirects to storage are followed; reqwest
    /// drops the `Authorization` header when a redirect leaves the registry's host).
    pub async fn get_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Response, MirrorError> {
        let url = self.blob_url(registry, repo, digest);
        let what = format!("blob {digest} of {registry}/{repo}");
        let resp = self
            .send(registry, &Scope::pull(repo), &what, |h| h.get(&url))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(MirrorError::NotFound {
                image: format!("{registry}/{repo}@{digest} (blob)"),
                registry: registry.into(),
            }),
            _ => Err(self.error_for(registry, &what, &url, resp).await),
        }
    }

    pub(super) fn resolve_location(&self, registry: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base_url(registry))
        }
    }

    /// Try a cross-repository mount of `digest` from `from` into `repo`; true when mounted
    /// (false when the registry started an ordinary upload instead, which is then cancelled).
    pub async fn mount_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<bool, MirrorError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base_url(registry));
        let what = format!("mount of blob {digest} from {from} into {registry}/{repo}");
        let resp = self
            .send(registry, &Scope::mount(repo, from), &what, |h| {
                h.post(&url)
                    .query(&[("mount", digest), ("from", from)])
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Some(loc) = header(&resp, "location") {
                    let loc = self.resolve_location(registry, &loc);
                    let _ = self
                        .send(registry, &Scope::push(repo), &what, |h| h.delete(&loc))
                        .await;
                }
                Ok(false)
            }
            _ => Err(self.write_error(registry, &what, &url, resp).await),
        }
    }

    /// Start an upload session in `repo`; returns its absolute location.
    pub async fn start_upload(
        &self,
        registry: &str,
        repo: &str,
        what: &str,
    ) -> Result<String, MirrorError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base_url(registry));
        let resp = self
            .send(registry, &Scope::push(repo), what, |h| {
                h.post(&url).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.write_error(registry, what, &url, resp).await);
        }
        let loc = header(&resp, "location").ok_or_else(|| MirrorError::Http {
            what: what.into(),
            url: url.clone(),
            status: 202,
            message: "upload started without a Location header".into(),
        })?;
        Ok(self.resolve_location(registry, &loc))
    }

    /// Finish an upload with one streamed `PUT …?digest=` of `size` bytes. The registry checks
    /// the digest too; the body stream (see `copy`) refuses to deliver its last bytes when they do
    /// not hash to `digest`, so a bad blob is never committed even by a registry that trusts.
    /// When the body stream fails, the caller finds the real cause in the stream's error slot.
    // The upload's identity (registry, repo, location, digest, size) is all needed here.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_upload(
        &self,
        registry: &str,
        repo: &str,
        location: &str,
        digest: &str,
        size: u64,
        body: reqwest::Body,
        what: &str,
    ) -> Result<(), MirrorError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        self.ensure_fresh(registry, &Scope::push(repo), what)
            .await?;
        let mut req = self
            .http
            .request(Method::PUT, &url)
            .headers(headers)
            .body(body);
        if let Some(h) = self.auth_header(registry, &Scope::push(repo)) {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(registry, &url, &e))?;
        if resp.status() == StatusCode::CREATED || resp.status().is_success() {
            Ok(())
        } else {
            Err(self.write_error(registry, what, &url, resp).await)
        }
    }
}
