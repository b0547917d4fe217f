//! What a failed call answers: Docker's status code and `{"message": …}`. Status codes follow
//! moby's mapping from error kinds, which the docker CLI branches on (404 to try another kind of
//! object, 409 for conflicts, 503 for "not a manager").

use hyper::StatusCode;

/// A failed call, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A path no route serves: Docker's words.
    pub fn page_not_found() -> ApiError {
        ApiError::not_found("page not found")
    }

    /// The JSON body Docker sends with an error.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}

/// The message a manager-only call gets on a node that is not one, as Docker words it.
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

/// Maps a control API status to Docker's code. The message is the daemon's own, already
/// written for users; "not a manager" is Docker's, since scripts match on it.
pub fn from_status(status: &tonic::Status) -> ApiError {
    use tonic::Code;
    let message = status.message();
    let code = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::FailedPrecondition | Code::Unavailable if is_not_a_manager(message) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, NOT_A_MANAGER);
        }
        // A locked manager is unavailable until unlocked, as in Docker.
        Code::FailedPrecondition if message.contains("locked") => StatusCode::SERVICE_UNAVAILABLE,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // A write at a stale version: Docker's words and its plain 500, which scripts match.
        Code::Aborted => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("update out of sequence: {message}"),
            );
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(code, message)
}

/// A control API reply as a call's result: its message, or Docker's code for its status.
pub trait Reply<T> {
    fn answer(self) -> Result<T, ApiError>;
}

impl<T> Reply<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self) -> Result<T, ApiError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| from_status(&status))
    }
}

fn is_not_a_manager(message: &str) -> bool {
    message.contains("not a swarm manager") || message.contains("not part of a swarm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_statuses_become_the_codes_the_docker_cli_branches_on() {
        for (status, code) in [
            (tonic::Status::invalid_argument("bad"), 400),
            (tonic::Status::not_found("service web not found"), 404),
            (tonic::Status::already_exists("name in use"), 409),
            (tonic::Status::aborted("version conflict"), 500),
            (
                tonic::Status::failed_precondition("this node is not a swarm manager: run"),
                503,
            ),
            (
                tonic::Status::failed_precondition("the swarm is locked"),
                503,
            ),
            (tonic::Status::failed_precondition("a service uses it"), 400),
            (tonic::Status::unavailable("no leader"), 503),
            (tonic::Status::internal("boom"), 500),
        ] {
            assert_eq!(from_status(&status).status.as_u16(), code, "{status:?}");
        }
        assert_eq!(
            from_status(&tonic::Status::failed_precondition(
                "this node is not a swarm manager: x"
            ))
            .message,
            NOT_A_MANAGER
        );
        assert!(
            from_status(&tonic::Status::aborted("version conflict"))
                .message
                .starts_with("update out of sequence")
        );
    }
}
