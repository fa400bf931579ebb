package authserver

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

func metaTypeTokenReview() metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"}
}
