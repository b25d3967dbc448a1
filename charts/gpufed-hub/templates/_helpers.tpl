{{/* Name of everything the chart creates. */}}
{{- define "gpufed-hub.name" -}}
{{- default "gpufed-hub" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "gpufed-hub.labels" -}}
app.kubernetes.io/name: gpufed-hub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gpufed
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of the hub pods. */}}
{{- define "gpufed-hub.selector" -}}
app.kubernetes.io/name: gpufed-hub
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator image. */}}
{{- define "gpufed-hub.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
