{{- define "signalbox.name" -}}signalbox{{- end -}}

{{- define "signalbox.fullname" -}}
{{- if contains "signalbox" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-signalbox" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "signalbox.labels" -}}
app.kubernetes.io/name: signalbox
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: worker, serve, tick, deliver */}}
{{- define "signalbox.selector" -}}
app.kubernetes.io/name: signalbox
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "signalbox.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "signalbox.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "signalbox.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The store, the trail key and SMTP: every pod that writes the store or sends letters. */}}
{{- define "signalbox.storeEnv" -}}
- name: SIGNALBOX_POSTGRES
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgres.urlSecret.name }}
      key: {{ .Values.postgres.urlSecret.key }}
- name: SIGNALBOX_TRAIL_KEY
  value: /var/run/signalbox/trail/{{ .Values.trailKeySecret.key }}
{{- if .Values.smtp.host }}
- name: SIGNALBOX_SMTP_HOST
  value: {{ .Values.smtp.host | quote }}
- name: SIGNALBOX_SMTP_PORT
  value: {{ .Values.smtp.port | quote }}
- name: SIGNALBOX_SMTP_STARTTLS
  value: {{ .Values.smtp.starttls | quote }}
- name: SIGNALBOX_SMTP_USER
  valueFrom:
    secretKeyRef:
      name: {{ .Values.smtp.loginSecret.name }}
      key: {{ .Values.smtp.loginSecret.userKey }}
- name: SIGNALBOX_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.smtp.loginSecret.name }}
      key: {{ .Values.smtp.loginSecret.passwordKey }}
{{- end }}
{{- end -}}

{{- define "signalbox.trailVolume" -}}
- name: trail-key
  secret:
    secretName: {{ .Values.trailKeySecret.name }}
    defaultMode: 0400
    items:
      - key: {{ .Values.trailKeySecret.key }}
        path: {{ .Values.trailKeySecret.key }}
{{- end -}}
