//! What the stand-in answers a node agent, as recorded from kube-apiserver v1.36.2
//! (`tests/fixtures/kube/v1.36.2/agent/`, see its README): core/v1 pods and serviceaccounts
//! (stored, nothing more), and the TokenRequest subresource
//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`.
//!
//! A token it issues is `podcidr-test-<sa>-<n>` (n counts from 1), so the request log names
//! which token a request carried; `cap_token_seconds` models the API server's
//! `--service-account-max-token-expiration` (the answer's `spec.expirationSeconds` is the
//! capped lifetime), so that a test can watch a renewal without waiting ten minutes.
//!
//! Not recorded, so modelled on the API server's code: a bound Pod that does not exist is a
//! 404 for the pod; a missing ServiceAccount a 404 for it.

use super::*;

pub(super) fn resources() -> Vec<ResDef> {
    vec![
        ResDef::new("", "v1", "pods", "Pod", true, true, false),
        ResDef::new("", "v1", "serviceaccounts", "ServiceAccount", true, false, false),
    ]
}

/// The recorded default lifetime, and the API server's minimum.
const DEFAULT_SECONDS: i64 = 3600;
const MIN_SECONDS: i64 = 600;

impl Store {
    /// The TokenRequest subresource; None for any other request.
    pub(super) fn agent_handle(&mut self, req: &Req) -> Option<Resp> {
        let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", ns, "serviceaccounts", sa, "token"] = segs.as_slice() else {
            return None;
        };
        let (ns, sa) = (ns.to_string(), sa.to_string());
        if req.method != "POST" {
            return Some(Resp::new(
                405,
                status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                    None,
                ),
            ));
        }
        let sa_res = self.find_res("", "v1", "serviceaccounts")?;
        let Some(account) = self.objects.get(&(sa_res.storage(), ns.clone(), sa.clone())) else {
            return Some(not_found(&sa_res, &sa));
        };
        let sa_uid = str_at(&account.value, "metadata.uid").to_string();
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return Some(bad_request(&format!("the body of the request could not be decoded: {e}"))),
        };
        let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let asked = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_SECONDS);
        if asked < MIN_SECONDS {
            // tokenrequest-short-60s.json
            let m = format!("Invalid value: {asked}: may not specify a duration less than 10 minutes");
            let mut s = status_body(
                422,
                "Invalid",
                &format!("TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: {m}"),
                None,
            );
            s["details"] = json!({"group":"authentication.k8s.io","kind":"TokenRequest",
                "causes":[{"reason":"FieldValueInvalid","message":m,"field":"spec.expirationSeconds"}]});
            return Some(Resp::new(422, s));
        }
        if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
            let pod_name = bound["name"].as_str().unwrap_or("").to_string();
            let pod_res = self.find_res("", "v1", "pods")?;
            let Some(pod) = self.objects.get(&(pod_res.storage(), ns.clone(), pod_name.clone())) else {
                return Some(not_found(&pod_res, &pod_name));
            };
            let uid = bound["uid"].as_str().unwrap_or("");
            if !uid.is_empty() && uid != str_at(&pod.value, "metadata.uid") {
                // tokenrequest-wrong-uid.json
                let msg = format!(
                    "Operation cannot be fulfilled on Pod \"{pod_name}\": the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                );
                return Some(Resp::new(
                    409,
                    status_body(409, "Conflict", &msg, Some(json!({"name": pod_name, "kind": "Pod"}))),
                ));
            }
        }
        let seconds = match self.token_cap {
            Some(cap) => asked.min(cap),
            None => asked,
        };
        spec["expirationSeconds"] = json!(seconds);
        if spec.get("audiences").is_none() {
            spec["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
        }
        self.tokens_issued += 1;
        let token = format!("{TOKEN_PREFIX}{sa}-{}", self.tokens_issued);
        let expires = SystemTime::now() + Duration::from_secs(seconds as u64);
        Some(Resp::new(
            201,
            json!({
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa, "namespace": ns, "uid": sa_uid, "creationTimestamp": now_rfc3339()},
                "spec": spec,
                "status": {
                    "token": token,
                    "expirationTimestamp": humantime::format_rfc3339_seconds(expires).to_string(),
                },
            }),
        ))
    }
}

impl KubeApi {
    /// Cap every token's lifetime at `seconds`, as `--service-account-max-token-expiration` does.
    pub fn cap_token_seconds(&self, seconds: i64) {
        self.shared.lock().token_cap = Some(seconds);
    }

    /// How many tokens TokenRequest has issued (the last one is `podcidr-test-<sa>-<n>`).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.lock().tokens_issued
    }

    /// A ServiceAccount and a Pod using it, bound to `node`, as the DaemonSet would make them:
    /// the pod's UID.
    pub fn create_agent_pod(&self, ns: &str, sa: &str, pod: &str, node: &str) -> String {
        self.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            "application/json",
            &json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":sa,"namespace":ns}}),
        );
        let p = self.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            "application/json",
            &json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":pod,"namespace":ns},
                "spec":{"serviceAccountName":sa,"nodeName":node,"containers":[{"name":"agent","image":"podcidr:test"}]}}),
        );
        str_at(&p, "metadata.uid").to_string()
    }
}
