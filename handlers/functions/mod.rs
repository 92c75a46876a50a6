//! One module per function definition.
