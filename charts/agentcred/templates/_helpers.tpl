{{/*
Names are fixed (agentcred-…), as in config/default: the manager's flag
defaults (--webhook-service-name, --webhook-configuration-name) name these
objects, and the CRDs and ClusterRoles are cluster-wide, so the chart is
installed once per cluster.
*/}}

{{/* Labels on every object's metadata. */}}
{{- define "agentcred.labels" -}}
app.kubernetes.io/name: agentcred
app.kubernetes.io/part-of: agentcred
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector of a component's pods: the same as config/ so that moving
between kustomize and Helm never meets an immutable selector. */}}
{{- define "agentcred.selector" -}}
app.kubernetes.io/component: {{ . }}
app.kubernetes.io/name: agentcred
{{- end }}

{{- define "agentcred.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Environment both Deployments share. */}}
{{- define "agentcred.env" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# The Go garbage collector works harder as the heap nears the container's
# memory limit instead of letting it be OOM-killed.
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}

{{/* Scheduling and pull secrets of a component: (list $ .Values.x). */}}
{{- define "agentcred.scheduling" -}}
{{- $root := index . 0 }}{{- $c := index . 1 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget: (list $ "component" "name" .Values.x). */}}
{{- define "agentcred.pdb" -}}
{{- $root := index . 0 }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ index . 2 }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "agentcred.labels" $root | nindent 4 }}
spec:
  {{- $pdb := (index . 3).podDisruptionBudget }}
  {{- /* The API server refuses both at once: maxUnavailable, when set, wins. */}}
  {{- if hasKey $pdb "maxUnavailable" }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "agentcred.selector" (index . 1) | nindent 6 }}
{{- end }}
