//! One CommandLineTool or ExpressionTool invocation: building its command
//! line and collecting its outputs.
