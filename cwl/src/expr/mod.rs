//! CWL expressions: parameter references and JavaScript.
