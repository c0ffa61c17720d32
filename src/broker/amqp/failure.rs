//! Classification of AMQP publish and declare errors into those a retry
//! can cure and those that need a change, with the change. The server
//! reports them as AMQP 0-9-1 reply codes in channel.close, such as 404
//! NOT_FOUND or 406 PRECONDITION_FAILED.

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

use super::Route;

/// Handling of a failed publish or declare.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Failure {
    /// Whether a later attempt may succeed.
    pub(super) transient: bool,
    /// Change to make, when a retry cannot help.
    pub(super) fix: Option<String>,
}

impl Failure {
    fn transient() -> Self {
        Self {
            transient: true,
            fix: None,
        }
    }

    fn permanent(fix: String) -> Self {
        Self {
            transient: false,
            fix: Some(fix),
        }
    }
}

/// Classifies an error of basic.publish or of its confirm. A closed
/// connection or channel is transient: the next publish opens a new one.
pub(super) fn publish_failure(err: &lapin::Error, route: &Route) -> Failure {
    match soft_error(err) {
        Some(AMQPSoftError::NOTFOUND) => Failure::permanent(format!(
            "declare exchange \"{}\" on the broker",
            route.exchange
        )),
        Some(AMQPSoftError::ACCESSREFUSED) => Failure::permanent(format!(
            "grant the user write permission on exchange \"{}\"",
            route.exchange
        )),
        Some(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::CONTENTTOOLARGE) => {
            Failure::permanent(
                "raise max_message_size on the server, or include fewer attachment bytes \
                 in the document"
                    .into(),
            )
        }
        _ => Failure::transient(),
    }
}

/// Classifies an error of the declaration that `declare = true` requests.
pub(super) fn declare_failure(err: &lapin::Error, route: &Route) -> Failure {
    match (soft_error(err), route.exchange.is_empty()) {
        (Some(AMQPSoftError::PRECONDITIONFAILED), _) => Failure::permanent(format!(
            "queue \"{}\" exists with other settings: make it durable, or set \
             declare = false to use it as it is",
            route.routing_key
        )),
        (Some(AMQPSoftError::NOTFOUND), false) => Failure::permanent(format!(
            "declare exchange \"{}\" on the broker: declare = true only checks that a \
             named exchange exists",
            route.exchange
        )),
        (Some(AMQPSoftError::ACCESSREFUSED), _) => Failure::permanent(
            "grant the user configure permission on the queue or exchange".into(),
        ),
        _ => Failure::transient(),
    }
}

/// Returns the fix for a message the broker returned as unroutable.
pub(super) fn unroutable_fix(route: &Route) -> String {
    match route.exchange.is_empty() {
        true => format!(
            "no queue is named \"{}\": declare the queue, or set declare = true",
            route.routing_key
        ),
        false => format!(
            "bind a queue to exchange \"{}\" with routing key \"{}\"",
            route.exchange, route.routing_key
        ),
    }
}

/// Returns the AMQP 0-9-1 reply code of a channel-level error, when the
/// server closed the channel with one.
pub(in crate::broker) fn soft_error(err: &lapin::Error) -> Option<AMQPSoftError> {
    match err {
        lapin::Error::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn route(exchange: &str) -> Route {
        Route {
            exchange: exchange.into(),
            routing_key: "support".into(),
            declare: true,
        }
    }

    fn protocol_error(code: u16) -> lapin::Error {
        let error = lapin::protocol::AMQPError::from_id(code, "text".into()).unwrap();
        lapin::Error::ProtocolError(error)
    }

    #[test]
    fn missing_exchange_is_permanent() {
        let failure = publish_failure(&protocol_error(404), &route("mail"));

        assert!(!failure.transient);
        assert!(failure.fix.unwrap().contains("declare exchange \"mail\""));
    }

    #[test]
    fn lost_connection_is_transient() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let failure = publish_failure(&lapin::Error::IOError(Arc::new(io)), &route("mail"));

        assert_eq!(failure, Failure::transient());
    }

    #[test]
    fn inequivalent_queue_is_permanent() {
        let failure = declare_failure(&protocol_error(406), &route(""));

        assert!(!failure.transient);
        assert!(failure.fix.unwrap().contains("queue \"support\""));
    }

    #[test]
    fn unroutable_fix_depends_on_exchange() {
        assert!(unroutable_fix(&route("")).contains("set declare = true"));
        assert!(unroutable_fix(&route("mail")).contains("bind a queue to exchange \"mail\""));
    }
}
