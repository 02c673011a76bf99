pub mod money;
pub mod sandbox;
