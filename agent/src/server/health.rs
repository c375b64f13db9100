//! The Health service: the agent is serving, and which API version it speaks.

use async_trait::async_trait;
use hako_agent_api::health::health_check_response::ServingStatus;
use hako_agent_api::health::{CheckRequest, HealthCheckResponse, VersionCheckResponse};
use hako_agent_api::health_ttrpc::Health;
use hako_agent_api::{API_MAJOR, API_MINOR};
use ttrpc::r#async::TtrpcContext;

pub struct HealthService;

#[async_trait]
impl Health for HealthService {
    async fn check(&self, _: &TtrpcContext, _: CheckRequest) -> ttrpc::Result<HealthCheckResponse> {
        let mut r = HealthCheckResponse::new();
        r.status = ServingStatus::SERVING.into();
        Ok(r)
    }

    async fn version(
        &self,
        _: &TtrpcContext,
        _: CheckRequest,
    ) -> ttrpc::Result<VersionCheckResponse> {
        let mut r = VersionCheckResponse::new();
        r.api_major = API_MAJOR;
        r.api_minor = API_MINOR;
        r.agent_version = crate::VERSION.to_owned();
        Ok(r)
    }
}
