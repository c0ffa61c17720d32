//! Parsed-mail JSON model: the serde types of the inbound and outbound
//! documents. Plain data that imports nothing else of mailbridge.
