//! Driving a Workflow: steps run as their inputs become available.
