package controllers

// TrimCredential is the AgentCredential cache transform, for the fast tests
// that reconcile through a cache-shaped view of a fake client.
var TrimCredential = trimCredential

// AnnotationsFingerprintAnnotation is where a cached copy keeps the digest
// of the annotations it dropped.
const AnnotationsFingerprintAnnotation = annotationsFingerprintAnnotation
