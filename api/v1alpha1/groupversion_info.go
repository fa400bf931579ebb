// Package v1alpha1 contains the auth.agrenting.io/v1alpha1 API: the
// AgentCredential resource that asks agentcred to issue, hash and rotate a key.
// +kubebuilder:object:generate=true
// +groupName=auth.agrenting.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "auth.agrenting.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &AgentCredential{}, &AgentCredentialList{}, &IdentityClaim{}, &IdentityClaimList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
