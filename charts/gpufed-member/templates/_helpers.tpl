{{/* Labels of every object. */}}
{{- define "gpufed-member.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gpufed
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The cluster name, required. */}}
{{- define "gpufed-member.cluster" -}}
{{- required "cluster is required: the name of this cluster's MemberCluster on the hub" .Values.cluster -}}
{{- end -}}

{{/* Pod security context of the agent and the probe. */}}
{{- define "gpufed-member.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of the agent and the probe. */}}
{{- define "gpufed-member.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
