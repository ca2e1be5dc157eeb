//! Wire protocol between the husk host and the in-guest agent.
