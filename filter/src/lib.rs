//! mcp-gateway-filter: an MCP policy enforcement point inside Envoy.
//!
//! This file is glue only: each proxy-wasm callback reads host values, calls the pure core in
//! [`pipeline`], and applies the result. Decisions live in the modules below.

pub mod admin;
pub mod alloc;
pub mod agreement;
pub mod audit;
pub mod bytes;
pub mod cache;
pub mod config;
pub mod delegation;
pub mod envelope;
pub mod headers;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod session;
pub mod text;
pub mod trust;
pub mod verdict;
pub mod workflow;

#[cfg(target_arch = "wasm32")]
mod glue {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{Duration, UNIX_EPOCH};

    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

    use crate::admin::{self, AdminConfig};
    use crate::agreement;
    use crate::audit::{self, Record};
    use crate::workflow::{self, OnResponse, WorkflowKeys};
    use crate::config::{AuditSink, Config};
    use crate::headers::Block;
    use crate::host::Host;
    use crate::metrics::Tally;
    use crate::pipeline::{self, Edits, Gateway, Pending, Step};
    use crate::trust::Trust;
    use crate::verdict::Reply;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}

    /// Envoy's clock, read once per request or tick, and the WASI random source.
    struct EnvoyHost {
        now: u64,
    }

    impl EnvoyHost {
        fn current() -> EnvoyHost {
            let now = proxy_wasm::hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            EnvoyHost { now }
        }
    }

    impl Host for EnvoyHost {
        fn now(&self) -> u64 {
            self.now
        }

        fn random16(&self) -> [u8; 16] {
            let mut buf = [0u8; 16];
            // A failing random source must not yield predictable ids: abort the VM instead.
            getrandom::fill(&mut buf).expect("random source");
            buf
        }

        fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            match proxy_wasm::hostcalls::get_shared_data(key) {
                Ok((value, cas)) => (value.filter(|v| !v.is_empty()), cas.unwrap_or(0)),
                Err(_) => (None, 0),
            }
        }

        fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas).is_ok()
        }
    }

    type Shared = Rc<RefCell<Gateway>>;

    extern "C" {
        fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
        fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    }

    /// The filter state `wasm.mcp_audit`. A one-part property path is its name as is; the SDK's
    /// setter would build it in two vectors first, once per request.
    fn set_audit_state(json: &str) {
        const PATH: &[u8] = b"mcp_audit";
        // SAFETY: both pointers are valid for their lengths during the call; Envoy copies them.
        unsafe {
            proxy_set_property(PATH.as_ptr(), PATH.len(), json.as_ptr(), json.len());
        }
    }

    /// proxy-wasm header map types.
    const HTTP_REQUEST_HEADERS: u32 = 0;
    const HTTP_RESPONSE_HEADERS: u32 = 2;

    /// A header map in one host call, kept in the buffer Envoy serialized it into. Each host call
    /// that returns data also calls back into the VM to allocate, the costliest kind of call, so
    /// one read of the map beats a read per header.
    fn header_block(map_type: u32) -> Block {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: on success Envoy wrote `size` bytes into memory it obtained from this module's
        // allocator (the SDK's `proxy_on_memory_allocate`, a leaked `Vec<u8>` of that capacity);
        // the Vec takes it back, as the SDK's own map getters do.
        unsafe {
            if proxy_get_header_map_pairs(map_type, &mut data, &mut size) != 0 || data.is_null() {
                return Block::default();
            }
            Block::parse(Vec::from_raw_parts(data, size, size))
        }
    }

    thread_local! {
        /// Envoy metric ids by name, defined on first use (one VM per worker thread).
        static METRIC_IDS: RefCell<std::collections::HashMap<String, u32>> = RefCell::new(Default::default());
    }

    /// Adds `delta` to a counter, defining it on first use.
    fn count(name: &str, delta: u64) {
        let id = METRIC_IDS.with(|ids| {
            if let Some(id) = ids.borrow().get(name) {
                return Some(*id);
            }
            let id = proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok()?;
            ids.borrow_mut().insert(name.to_string(), id);
            Some(id)
        });
        if let Some(id) = id {
            let _ = proxy_wasm::hostcalls::increment_metric(id, delta as i64);
        }
    }

    /// When to fetch one identity provider's JWKS.
    #[derive(Clone, Copy)]
    struct JwksSchedule {
        idp: usize,
        next: u64,
        last: u64,
    }

    #[derive(Default)]
    struct Root {
        gateway: Option<Shared>,
        /// Set instead of `gateway` on the admin listener.
        admin: Option<Rc<(AdminConfig, WorkflowKeys)>>,
        /// In-flight JWKS fetches: call token → identity provider index.
        fetches: Vec<(u32, usize)>,
        schedules: Vec<JwksSchedule>,
        /// Event counts already flushed to Envoy's counters.
        flushed: Tally,
        /// The revocation feed poll in flight, and when the next one is due.
        feed_call: Option<u32>,
        feed_next: u64,
    }

    impl Context for Root {
        fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
            if self.feed_call == Some(token_id) {
                self.feed_call = None;
                let status = self.get_http_call_response_header(":status").unwrap_or_default();
                let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
                let taken = if status == "200" { admin::take_in_feed(&EnvoyHost::current(), &body) } else { Err(format!("status {status}")) };
                if let Err(e) = taken {
                    log::warn!("revocation feed: {e}; keeping the current table");
                }
                return;
            }
            let Some(pos) = self.fetches.iter().position(|(t, _)| *t == token_id) else { return };
            let (_, idp) = self.fetches.swap_remove(pos);
            let Some(gw) = &self.gateway else { return };
            let status = self.get_http_call_response_header(":status").unwrap_or_default();
            let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
            let mut gw = gw.borrow_mut();
            let result = if status == "200" {
                gw.trust.refresh_jwks(idp, &String::from_utf8_lossy(&body))
            } else {
                Err(format!("status {status}"))
            };
            let uri = gw.config.identity_providers[idp].jwks_uri.clone();
            let (refresh, retry) = uri.map_or((300, 5), |u| (u.refresh_secs, u.min_refresh_secs));
            // On failure keep the last good keys and retry soon, not after a full interval.
            count(if result.is_ok() { "mcp_gateway.jwks.refresh_ok" } else { "mcp_gateway.jwks.refresh_failed" }, 1);
            let wait = match &result {
                Ok(n) => {
                    log::info!("jwks: identity_providers[{idp}] refreshed, {n} keys");
                    refresh
                }
                Err(e) => {
                    log::warn!("jwks: identity_providers[{idp}] refresh failed ({e}); keeping the last good keys");
                    retry
                }
            };
            let now = EnvoyHost::current().now;
            if let Some(s) = self.schedules.iter_mut().find(|s| s.idp == idp) {
                s.next = now + wait;
            }
        }
    }

    impl Root {
        /// Polls the revocation feed when one is configured and a poll is due.
        fn poll_feed(&mut self, gw: &Shared, now: u64) {
            let Some(feed) = gw.borrow().config.revocation_feed.clone() else { return };
            if self.feed_call.is_some() || now < self.feed_next {
                return;
            }
            self.feed_next = now + feed.poll_secs;
            let authority = feed.authority.clone().unwrap_or_else(|| feed.cluster.clone());
            let headers = vec![(":method", "GET"), (":path", feed.path.as_str()), (":authority", authority.as_str())];
            match self.dispatch_http_call(&feed.cluster, headers, None, vec![], Duration::from_millis(feed.timeout_ms)) {
                Ok(token) => self.feed_call = Some(token),
                Err(e) => log::warn!("revocation feed: cannot reach cluster {}: {e:?}", feed.cluster),
            }
        }
    }

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let bytes = self.get_plugin_configuration().unwrap_or_default();
            if let Some(admin) = admin::parse(&bytes) {
                let loaded = admin.and_then(|cfg| Ok((admin::keys(&cfg, &|n| std::env::var(n).ok())?, cfg)));
                return match loaded {
                    Ok((keys, cfg)) => {
                        self.admin = Some(Rc::new((cfg, keys)));
                        true
                    }
                    Err(err) => {
                        log::error!("invalid mcp-gateway-filter admin configuration: {err}");
                        false
                    }
                };
            }
            let loaded = Config::load(&bytes).map_err(|e| e.to_string()).and_then(|config| {
                let trust = Trust::build(&config, &|name| std::env::var(name).ok())
                    .map_err(|p| format!("invalid mcp-gateway-filter configuration: {}", p.join("; ")))?;
                Ok(Gateway::new(config, trust))
            });
            match loaded {
                Ok(gw) => {
                    // From now on a request reads the revocation epoch, not the whole table.
                    workflow::announce_revocations(&EnvoyHost::current());
                    self.schedules = (0..gw.config.identity_providers.len())
                        .filter(|i| gw.config.identity_providers[*i].jwks_uri.is_some())
                        .map(|idp| JwksSchedule { idp, next: 0, last: 0 })
                        .collect();
                    // A short tick: the first fetch (and a refetch on an unknown kid) should not
                    // wait; each tick only compares times and flushes counters.
                    self.set_tick_period(Duration::from_millis(200));
                    self.gateway = Some(Rc::new(RefCell::new(gw)));
                    true
                }
                // Returning false makes Envoy refuse this configuration and keep the last good one.
                Err(err) => {
                    log::error!("{err}");
                    false
                }
            }
        }

        fn on_tick(&mut self) {
            let Some(gw) = self.gateway.clone() else { return };
            let tally = gw.borrow().tally();
            for (name, delta) in tally.since(&self.flushed) {
                count(name, delta);
            }
            self.flushed = tally;
            for (name, delta) in gw.borrow_mut().pending_metrics.drain() {
                count(&name, delta);
            }
            let now = EnvoyHost::current().now;
            self.poll_feed(&gw, now);
            // The wish stays until a fetch is dispatched, so a kid seen just after a fetch is
            // refetched once min_refresh_secs has passed rather than forgotten.
            let unknown_kid_seen = gw.borrow().jwks_refresh_wanted;
            for i in 0..self.schedules.len() {
                let s = self.schedules[i];
                let Some(uri) = gw.borrow().config.identity_providers[s.idp].jwks_uri.clone() else { continue };
                // An unknown kid means the IdP rotated: fetch now, but at most once per min_refresh_secs.
                let due = now >= s.next || (unknown_kid_seen && now >= s.last + uri.min_refresh_secs);
                if !due || self.fetches.iter().any(|(_, idp)| *idp == s.idp) {
                    continue;
                }
                let authority = uri.authority.clone().unwrap_or_else(|| uri.cluster.clone());
                let headers = vec![(":method", "GET"), (":path", uri.path.as_str()), (":authority", authority.as_str())];
                match self.dispatch_http_call(&uri.cluster, headers, None, vec![], Duration::from_millis(uri.timeout_ms)) {
                    Ok(token) => {
                        self.fetches.push((token, s.idp));
                        gw.borrow_mut().jwks_refresh_wanted = false;
                    }
                    Err(e) => log::warn!("jwks: cannot reach cluster {}: {e:?}", uri.cluster),
                }
                // Until the answer arrives (or if the call could not start), retry after the minimum.
                self.schedules[i] = JwksSchedule { idp: s.idp, next: now + uri.min_refresh_secs, last: now };
            }
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            if let Some(admin) = &self.admin {
                return Some(Box::new(AdminExchange { admin: admin.clone(), method: String::new(), path: String::new() }));
            }
            let gateway = self.gateway.clone()?;
            Some(Box::new(Exchange {
                gateway,
                host: EnvoyHost::current(),
                headers: Block::default(),
                pending: None,
                record: Record::default(),
                on_response: OnResponse::Strip,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    /// One HTTP request/response through the filter.
    struct Exchange {
        gateway: Shared,
        /// The clock as the request arrived: one reading serves every decision about it.
        host: EnvoyHost,
        headers: Block,
        pending: Option<Pending>,
        record: Record,
        on_response: OnResponse,
    }

    impl Context for Exchange {}

    impl Exchange {
        /// The whole body is in Envoy's buffer: read up to `max_size` of it and decide.
        fn body_phase(&mut self, pending: Pending, max_size: usize) -> Action {
            let body = self.get_http_request_body(0, max_size).unwrap_or_default();
            let gateway = self.gateway.clone();
            let step = pipeline::on_body(&mut gateway.borrow_mut(), &self.host, &self.headers.pairs(), pending, &body, &mut self.record);
            self.run(step)
        }

        fn apply(&self, edits: &Edits) {
            for name in &edits.remove {
                self.set_http_request_header(name, None);
            }
            for (name, value) in &edits.set {
                self.set_http_request_header(name, Some(value));
            }
        }

        fn reply(&self, reply: &Reply) -> Action {
            let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.send_http_response(reply.status, headers, Some(&reply.body));
            Action::Pause
        }

        fn run(&mut self, step: Step) -> Action {
            match step {
                Step::Forward(edits) => {
                    self.apply(&edits);
                    self.on_response = edits.on_response;
                    Action::Continue
                }
                Step::ReadBody(pending) => {
                    self.pending = Some(pending);
                    Action::Pause
                }
                Step::Reply(reply) => self.reply(&reply),
            }
        }
    }

    impl HttpContext for Exchange {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            self.headers = header_block(HTTP_REQUEST_HEADERS);
            let headers = self.headers.pairs();
            self.record.ts = self.host.now;
            self.record.request_id = pipeline::header(&headers, "x-request-id").unwrap_or("").to_string();
            let step = pipeline::on_headers(&mut self.gateway.borrow_mut(), &self.host, &headers, end_of_stream, &mut self.record);
            drop(headers);
            self.run(step)
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            let Some(pending) = self.pending.take() else { return Action::Continue };
            if body_size > self.gateway.borrow().config.max_body_bytes {
                let step = pipeline::body_too_large(&self.gateway.borrow().config, &mut self.record);
                return self.run(step);
            }
            if !end_of_stream {
                self.pending = Some(pending);
                return Action::Pause;
            }
            self.body_phase(pending, body_size)
        }

        /// A request may end with trailers instead of a last data frame (HTTP/2, or HTTP/1.1
        /// chunked with trailers enabled): that is its end of body. Without this callback Envoy
        /// would forward the held request unchecked.
        fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
            let Some(pending) = self.pending.take() else { return Action::Continue };
            // One byte past the limit tells an oversized body from one at the limit.
            let limit = self.gateway.borrow().config.max_body_bytes;
            self.body_phase(pending, limit + 1)
        }

        fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            if self.record.backend.is_empty() {
                return Action::Continue;
            }
            let block = header_block(HTTP_RESPONSE_HEADERS);
            let headers = block.pairs();
            let edits = pipeline::on_response(&self.gateway.borrow(), &self.host, &self.on_response, &headers);
            if self.record.status == 0 {
                self.record.status = edits.status;
            }
            for name in &edits.remove {
                self.set_http_response_header(name, None);
            }
            if let Some(handle) = &edits.session {
                self.set_http_response_header(agreement::H_SESSION_ID, Some(handle));
            }
            if edits.opened {
                count("mcp_gateway.sessions.opened", 1);
            }
            Action::Continue
        }

        fn on_log(&mut self) {
            if !self.record.audited {
                return;
            }
            self.record.finish();
            let mut gw = self.gateway.borrow_mut();
            let json = self.record.json();
            // Envoy runs filters' log callbacks before the listener's access logs, so the whole
            // record, status included, is there for %FILTER_STATE(wasm.mcp_audit:PLAIN)%.
            set_audit_state(&json);
            if gw.config.audit.sink == AuditSink::Log {
                log::info!("{}{json}", audit::PREFIX);
            }
            gw.pending_metrics.record(&self.record);
        }
    }

    /// One request on the admin listener.
    struct AdminExchange {
        admin: Rc<(AdminConfig, WorkflowKeys)>,
        method: String,
        path: String,
    }

    impl Context for AdminExchange {}

    impl AdminExchange {
        fn answer(&self, body: &[u8]) -> Action {
            let (cfg, keys) = &*self.admin;
            let reply = admin::handle(cfg, keys, &EnvoyHost::current(), &self.method, &self.path, body);
            let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.send_http_response(reply.status, headers, Some(&reply.body));
            Action::Pause
        }
    }

    impl HttpContext for AdminExchange {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            self.method = self.get_http_request_header(":method").unwrap_or_default();
            self.path = self.get_http_request_header(":path").unwrap_or_default();
            if end_of_stream {
                return self.answer(b"");
            }
            Action::Pause
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if body_size > 64 * 1024 {
                return self.answer(b"");
            }
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            self.answer(&body)
        }
    }
}
